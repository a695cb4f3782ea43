"""Completions that arrive together settle in one transaction, each with its own answer.

The completions are sent concurrently on the app's own event loop, so they queue
behind each other and the batcher settles them together; the tests check the
batch counters, each completion's answer, the runs' state over HTTP, and that
the steps the batch made ready are claimed exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from live_http import in_app_loop
from test_supervision import runtime_of
from workflow_helpers import claim, complete, put_workflow, run_state, start

from memory_service.errors import Conflict, NotFound
from memory_service.workflows import NextClaim
from memory_service.workflows.completions import Completion


def chain(queue: str) -> dict[str, Any]:
    return {
        "steps": [
            {"id": "x", "kind": "task", "queue": queue, "input": {"n": {"$ref": "input.n"}}},
            {"id": "y", "kind": "task", "queue": queue, "depends_on": ["x"],
             "input": {"v": {"$ref": "steps.x.output.v"}}},
        ]
    }  # fmt: skip


async def started(client: Any, h: dict[str, str], queue: str, n: int) -> list[dict[str, Any]]:
    """``n`` runs of a two-step chain, with their first steps claimed; the attempts."""
    name = await put_workflow(client, h, chain(queue))
    runs = [await start(client, h, name, {"n": i}) for i in range(n)]
    attempts = await claim(client, h, [queue], max_steps=n)
    assert len(attempts) == n
    by_run = {a["run_id"]: a for a in attempts}
    return [by_run[r["id"]] for r in runs]


async def test_concurrent_completions_share_a_commit_and_each_gets_its_own_answer(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h, oh = tenant["headers"], other_tenant["headers"]
    queue, other_queue = f"g{tenant['id'][:8]}", f"g{other_tenant['id'][:8]}"
    a1, a2, a3, a4 = await started(client, h, queue, 4)
    [b] = await started(client, oh, other_queue, 1)
    me, them = uuid.UUID(tenant["id"]), uuid.UUID(other_tenant["id"])
    gateway = runtime_of(client).workflows.workers
    nxt = NextClaim([queue], max_steps=1, worker_id="next-worker")

    async def together() -> tuple[int, list[Any]]:
        batches = gateway.completions.batches
        answers = await asyncio.gather(
            gateway.complete(me, a1["id"], a1["lease_token"], {"v": 1}, then_claim=nxt),
            gateway.complete(me, a2["id"], str(uuid.uuid4()), {"v": 2}),  # a wrong token
            gateway.complete(me, a3["id"], a3["lease_token"], {"v": 3}, then_claim=nxt),
            gateway.complete(me, b["id"], b["lease_token"], {"v": 9}),  # another tenant's
            gateway.complete(them, b["id"], b["lease_token"], {"v": 10}),
            gateway.complete(me, a4["id"], a4["lease_token"], None),  # y cannot resolve
            gateway.complete(me, a1["id"], a1["lease_token"], {"v": 5}),  # a repeat
            return_exceptions=True,
        )
        return gateway.completions.batches - batches, answers

    took, answers = await in_app_loop(client, together)
    assert took == 1  # all seven settled in one transaction
    first, wrong, third, foreign, theirs, fourth, repeat = answers
    assert isinstance(wrong, Conflict) and "lease token" in str(wrong)
    assert isinstance(foreign, NotFound)
    assert isinstance(repeat, Conflict) and "already completed" in str(repeat)
    assert theirs == [] and fourth == []
    # the claims inside the batch took the steps the batch made ready, none twice
    claimed = [*first, *third]
    assert len(claimed) == 2 and all(a.step_id == "y" for a in claimed)
    assert all(a.worker_id == "next-worker" and a.tenant_id == me for a in claimed)
    assert {a.run_id for a in claimed} == {a1["run_id"], a3["run_id"]}
    assert await claim(client, h, [queue], max_steps=10) == []  # nothing left ready
    # what committed, and what did not
    for attempt, output in ((a1, {"v": 1}), (a3, {"v": 3}), (a4, None)):
        run = await run_state(client, h, attempt["run_id"])
        x = next(s for s in run["steps"] if s["id"] == "x")
        assert x["status"] == "completed" and x["output"] == output, run
    # x of run 4 completed without the value y refers to: y, and so the run, failed
    failed = await run_state(client, h, a4["run_id"])
    assert failed["status"] == "failed" and failed["steps"][1]["status"] == "failed", failed
    assert (await run_state(client, oh, b["run_id"]))["steps"][0]["output"] == {"v": 10}
    untouched = await run_state(client, h, a2["run_id"])
    assert untouched["steps"][0]["status"] == "running"
    # the refused completion is still the step's to finish, with the right token
    r = await complete(client, h, a2, {"v": 2})
    assert r.status_code == 200, r.text
    [y2] = await claim(client, h, [queue])
    assert y2["run_id"] == a2["run_id"] and y2["input"] == {"v": 2}


async def test_a_batch_whose_transaction_fails_settles_each_completion_alone(
    client: Any, tenant: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    h = tenant["headers"]
    queue = f"f{tenant['id'][:8]}"
    good = await started(client, h, queue, 3)
    me = uuid.UUID(tenant["id"])
    batcher = runtime_of(client).workflows.workers.completions

    async def together() -> tuple[int, int, list[Any]]:
        batches, fallbacks = batcher.batches, batcher.fallbacks
        items = [Completion(me, a["id"], a["lease_token"], {"v": i}) for i, a in enumerate(good)]
        # an id the database cannot read fails the batch's first statement
        items.insert(1, Completion(me, "not-a-uuid", "token", {"v": -1}))
        answers = await asyncio.gather(
            *(batcher.complete(item) for item in items), return_exceptions=True
        )
        return batcher.batches - batches, batcher.fallbacks - fallbacks, answers

    took, fell_back, answers = await in_app_loop(client, together)
    assert took == 1 and fell_back == 1
    assert isinstance(answers[1], Exception)
    assert [type(a).__name__ for i, a in enumerate(answers) if i != 1] == ["Settled"] * 3
    assert "settling each alone" in caplog.text
    scraped = (await client.get("/metrics")).text
    assert f'memory_workflow_completions_total{{what="fallbacks"}} {batcher.fallbacks}.0' in scraped
    for i, attempt in enumerate(good):
        run = await run_state(client, h, attempt["run_id"])
        assert run["steps"][0]["output"] == {"v": i} and run["steps"][1]["status"] == "ready"
    assert len(await claim(client, h, [queue], max_steps=10)) == 3


async def test_completions_in_one_batch_move_a_run_once_per_step(
    client: Any, tenant: dict[str, Any]
) -> None:
    """Two completions of one run in one batch: the step after both is made ready once,
    and the run completes with every output."""
    h = tenant["headers"]
    queue = f"d{tenant['id'][:8]}"
    body = {
        "steps": [
            {"id": "l", "kind": "task", "queue": queue},
            {"id": "r", "kind": "task", "queue": queue},
            {"id": "j", "kind": "task", "queue": queue, "depends_on": ["l", "r"],
             "input": {"l": {"$ref": "steps.l.output"}, "r": {"$ref": "steps.r.output"}}},
        ]
    }  # fmt: skip
    run = await start(client, h, await put_workflow(client, h, body), {})
    both = await claim(client, h, [queue], max_steps=2)
    assert sorted(a["step_id"] for a in both) == ["l", "r"]
    me = uuid.UUID(tenant["id"])
    gateway = runtime_of(client).workflows.workers
    nxt = NextClaim([queue], max_steps=5)

    async def together() -> tuple[int, list[Any]]:
        batches = gateway.completions.batches
        answers = await asyncio.gather(
            *(gateway.complete(me, a["id"], a["lease_token"], a["step_id"], then_claim=nxt)
              for a in both)
        )  # fmt: skip
        return gateway.completions.batches - batches, answers

    took, answers = await in_app_loop(client, together)
    assert took == 1
    [j] = [a for got in answers for a in got]
    assert j.step_id == "j" and j.input == {"l": "l", "r": "r"} and j.worker_id == "test-worker"
    assert await claim(client, h, [queue]) == []
    r = await complete(client, h, {"id": j.id, "lease_token": j.lease_token}, "done")
    assert r.status_code == 200, r.text
    finished = await run_state(client, h, run["id"])
    assert finished["status"] == "completed" and finished["output"] == {"j": "done"}
    # both steps of the batch got their own place in the run's execution, in order
    eid = finished["execution_id"]
    for _ in range(100):  # appended just after the commit
        execution = (await client.get(f"/v1/executions/{eid}", headers=h)).json()
        if execution["status"] != "running":
            break
        await asyncio.sleep(0.05)
    timeline = (await client.get(f"/v1/executions/{eid}/steps", headers=h)).json()["items"]
    assert [s["seq"] for s in timeline] == [1, 2, 3]
    assert [s["name"] for s in timeline] == [a["step_id"] for a in both] + ["j"]


async def test_null_outputs_settled_together_are_stored_as_alone(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    queue = f"n{tenant['id'][:8]}"
    name = await put_workflow(client, h, {"steps": [{"id": "z", "kind": "task", "queue": queue}]})
    runs = [await start(client, h, name, {}) for _ in range(3)]
    attempts = await claim(client, h, [queue], max_steps=3)
    me = uuid.UUID(tenant["id"])
    gateway = runtime_of(client).workflows.workers

    async def together() -> list[Any]:
        return await asyncio.gather(
            *(gateway.complete(me, a["id"], a["lease_token"], None) for a in attempts)
        )

    assert await in_app_loop(client, together) == [[], [], []]
    for run in runs:
        done = await run_state(client, h, run["id"])
        assert done["status"] == "completed" and done["output"] == {"z": None}, done


async def test_map_items_completed_in_one_batch_complete_their_map_once(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    queue = f"m{tenant['id'][:8]}"
    body = {
        "steps": [
            {"id": "m", "kind": "map", "over": {"$ref": "input.items"},
             "step": {"kind": "task", "queue": queue, "input": {"x": {"$ref": "item"}}}},
            {"id": "total", "kind": "task", "queue": queue, "depends_on": ["m"],
             "input": {"all": {"$ref": "steps.m.output"}}},
        ]
    }  # fmt: skip
    run = await start(client, h, await put_workflow(client, h, body), {"items": [1, 2, 3]})
    items = await claim(client, h, [queue], max_steps=5)
    assert sorted(a["step_id"] for a in items) == ["m[0]", "m[1]", "m[2]"]
    me = uuid.UUID(tenant["id"])
    gateway = runtime_of(client).workflows.workers
    nxt = NextClaim([queue], max_steps=5)

    async def together() -> tuple[int, list[Any]]:
        batches = gateway.completions.batches
        answers = await asyncio.gather(
            *(gateway.complete(me, a["id"], a["lease_token"], a["input"]["x"] * 10, then_claim=nxt)
              for a in items)
        )  # fmt: skip
        return gateway.completions.batches - batches, answers

    took, answers = await in_app_loop(client, together)
    assert took == 1
    [total] = [a for got in answers for a in got]  # made ready once, claimed once
    assert total.step_id == "total" and total.input == {"all": [10, 20, 30]}
    state = await run_state(client, h, run["id"])
    m = next(s for s in state["steps"] if s["id"] == "m")
    assert m["status"] == "completed" and m["output"] == [10, 20, 30]
