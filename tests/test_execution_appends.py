"""Appending steps: one statement that checks the head, the status and the keyframe.

A process remembers the head it wrote last and sends the next batch straight to
the write; these tests make that guess wrong (another process appended in
between, the execution finished) and check that the statement refuses the write
and the service still lands every step exactly once, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from live_http import in_app_loop

from memory_service.errors import Conflict, InvalidInput
from memory_service.executions import (
    ExecutionChanges,
    ExecutionLimits,
    ExecutionService,
    NewExecution,
    NewStep,
)
from tests.conftest import assert_problem

Client = AsyncTestClient[Litestar]
PAD = {"pad": "x" * 400}


async def two_processes_take_turns(
    one: ExecutionService, two: ExecutionService, tid: str
) -> tuple[list[Any], list[bool], list[Any]]:
    """Two services (as two processes would) append to one execution in turns, each
    from a head the other has moved; returns states, keyframe flags and cold states."""
    execution = await one.create(tid, NewExecution())
    for i in range(12):
        writer = (one, one, two)[i % 3]
        patch = [{"op": "add", "path": f"/k{i}", "value": i}]
        # a large state, so that a small patch is stored as a patch
        step_in = NewStep(kind="w", state=PAD) if i == 0 else NewStep(kind="w", state_patch=patch)
        [step] = await writer.append_steps(tid, execution.id, [step_in])
        assert step.seq == i + 1
    cold = ExecutionService(
        one.pool, one.cursors, ExecutionLimits(keyframe_interval=4, cache_bytes=0)
    )
    warm = [(await one.state_at(tid, execution.id, seq)).state for seq in range(1, 13)]
    rebuilt = [(await cold.state_at(tid, execution.id, seq)).state for seq in range(1, 13)]
    timeline = await one.list_steps(tid, execution.id, limit=100)
    return warm, [s.keyframe for s in timeline.items], rebuilt


async def test_a_stale_head_guess_is_refused_and_every_step_lands_once(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    runtime = app.state.runtime
    limits = ExecutionLimits(keyframe_interval=4)
    one = ExecutionService(runtime.pool, runtime.cursors, limits)
    two = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits(keyframe_interval=4))
    warm, keyframes, rebuilt = await in_app_loop(
        client, two_processes_take_turns, one, two, tenant["id"]
    )
    expected = [PAD | {f"k{j}": j for j in range(1, i + 1)} for i in range(12)]
    assert warm == expected and rebuilt == expected
    # a keyframe at the first step and then every 4th, whichever process wrote it
    assert [seq for seq, key in enumerate(keyframes, 1) if key] == [1, 5, 9]


async def appends_after_finishing(service: ExecutionService, tid: str) -> tuple[int, str, int]:
    execution = await service.create(tid, NewExecution())
    await service.append_steps(tid, execution.id, [NewStep(kind="a", state={"n": 1})])
    # another process finishes it; this one still holds the head it wrote
    other = ExecutionService(service.pool, service.cursors, ExecutionLimits())
    await other.update(tid, execution.id, ExecutionChanges(status="succeeded"), None)
    try:
        await service.append_steps(tid, execution.id, [NewStep(kind="b", state={"n": 2})])
    except Conflict as exc:
        refused = exc.detail
    else:
        refused = ""
    after = await service.get(tid, execution.id)
    steps = await service.list_steps(tid, execution.id, limit=10)
    return after.head_seq, refused, len(steps.items)


async def test_no_step_is_appended_to_a_finished_execution(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    runtime = app.state.runtime
    service = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits())
    head, refused, count = await in_app_loop(client, appends_after_finishing, service, tenant["id"])
    assert (head, count) == (1, 1)
    assert "succeeded" in refused

    h = tenant["headers"]
    eid = (await client.post("/v1/executions", json={}, headers=h)).json()["id"]
    url = f"/v1/executions/{eid}/steps"
    assert (await client.post(url, json={"kind": "a"}, headers=h)).status_code == 201
    done = await client.patch(f"/v1/executions/{eid}", json={"status": "failed"}, headers=h)
    assert done.status_code == 200, done.text
    batch = [{"kind": "b"}, {"kind": "c"}]
    assert_problem(await client.post(url, json=batch, headers=h), 409, mentions="failed")
    timeline = await client.get(url, headers=h)
    assert [s["kind"] for s in timeline.json()["items"]] == ["a"]


async def test_steps_without_times_take_the_database_clock(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await client.post("/v1/executions", json={}, headers=h)).json()["id"]
    url = f"/v1/executions/{eid}/steps"
    for _ in range(2):  # the first append reads the head, the second goes straight to the write
        r = await client.post(url, json=[{"kind": "a"}, {"kind": "b"}], headers=h)
        assert r.status_code == 201, r.text
        for step in r.json()["items"]:
            assert step["started_at"] == step["ended_at"] == step["recorded_at"]
    stored = (await client.get(url, headers=h)).json()["items"]
    answered = [s["recorded_at"] for s in stored]
    assert len(answered) == 4 and answered == sorted(answered)
    for step in stored:
        assert step["started_at"] == step["ended_at"] == step["recorded_at"]


async def nul_refusals(service: ExecutionService, tid: str) -> tuple[list[str], int]:
    execution = await service.create(tid, NewExecution())
    await service.append_steps(tid, execution.id, [NewStep(kind="a", state=PAD)])
    refused = []
    for step in (
        NewStep(kind="b", state={"s": "x\x00"}),
        NewStep(kind="b", state_patch=[{"op": "add", "path": "/s", "value": "x\x00"}]),
        NewStep(kind="b", state_patch=[{"op": "add", "path": "/s\x00", "value": 1}]),
    ):
        try:
            await service.append_steps(tid, execution.id, [NewStep(kind="ok"), step])
        except InvalidInput as exc:
            refused.append(exc.detail)
    return refused, (await service.get(tid, execution.id)).head_seq


async def test_a_nul_is_refused_by_the_service_in_a_state_and_in_a_patch(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    """The HTTP guard refuses a NUL in any body; the service refuses one on its own for
    callers that do not pass through it, in a new state and in a patch (a patched
    state is then not scanned again: it is made of checked parts)."""
    runtime = app.state.runtime
    service = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits())
    refused, head = await in_app_loop(client, nul_refusals, service, tenant["id"])
    assert len(refused) == 3 and all("NUL" in r for r in refused), refused
    assert head == 1  # nothing of any refused batch was written


async def held_heads(service: ExecutionService, tid: str) -> tuple[dict[str, Any], list[Any], list[Any]]:
    execution = await service.create(tid, NewExecution())
    mine = {"n": 0}
    # a full state then a patch in one batch; then the caller changes its own dict
    await service.append_steps(
        tid, execution.id,
        [NewStep(kind="a", state=mine), NewStep(kind="b", state_patch=[{"op": "add", "path": "/p", "value": 1}])],
    )  # fmt: skip
    mine["n"] = 1
    await service.append_steps(tid, execution.id, [NewStep(kind="c", state=mine)])
    for i in range(3):  # patches against the head this process holds
        await service.append_steps(
            tid, execution.id, [NewStep(kind="d", state_patch=[{"op": "add", "path": f"/k{i}", "value": i}])]
        )
    with pytest.raises(Conflict):  # the first operation applies, the second does not
        await service.append_steps(
            tid, execution.id,
            [NewStep(kind="e", state_patch=[{"op": "add", "path": "/bad", "value": 1}, {"op": "remove", "path": "/missing"}])],
        )  # fmt: skip
    await service.append_steps(
        tid, execution.id, [NewStep(kind="f", state_patch=[{"op": "add", "path": "/last", "value": 9}])]
    )
    cold = ExecutionService(service.pool, service.cursors, ExecutionLimits(cache_bytes=0))
    warm = [(await service.state_at(tid, execution.id, seq)).state for seq in range(1, 8)]
    rebuilt = [(await cold.state_at(tid, execution.id, seq)).state for seq in range(1, 8)]
    return mine, warm, rebuilt


async def test_the_head_held_between_appends_is_never_a_callers_object_or_half_patched(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    """A full state stays the caller's (a patch after it in the batch works on a copy,
    and the caller may change its dict afterwards); the head state held for the next
    append comes only from patching, and a batch that fails halfway leaves it unused."""
    runtime = app.state.runtime
    service = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits())
    mine, warm, rebuilt = await in_app_loop(client, held_heads, service, tenant["id"])
    assert mine == {"n": 1}
    expected = [
        {"n": 0},
        {"n": 0, "p": 1},
        {"n": 1},
        {"n": 1, "k0": 0},
        {"n": 1, "k0": 0, "k1": 1},
        {"n": 1, "k0": 0, "k1": 1, "k2": 2},
        {"n": 1, "k0": 0, "k1": 1, "k2": 2, "last": 9},
    ]
    assert warm == expected and rebuilt == expected
