"""Executions over HTTP on the real database: create, list, update, steps and state."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from live_http import in_app_loop

from memory_service.errors import Conflict
from memory_service.executions import (
    ExecutionChanges,
    ExecutionLimits,
    ExecutionService,
    NewExecution,
    NewStep,
)
from tests.conftest import assert_problem

Client = AsyncTestClient[Litestar]


async def new_execution(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/executions", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def append(client: Client, headers: dict[str, str], eid: str, body: Any) -> dict[str, Any]:
    r = await client.post(f"/v1/executions/{eid}/steps", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def state_at(client: Client, headers: dict[str, str], eid: str, at: Any) -> Any:
    r = await client.get(f"/v1/executions/{eid}/state", params={"at": at}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_create_get_list_and_update_with_if_match(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    task = await client.post("/v1/tasks", json={"title": "answer"}, headers=h)
    created = await new_execution(
        client, h, task_id=task.json()["id"], agent_id="planner", metadata={"model": "m1"}
    )
    assert created["status"] == "running" and created["head_seq"] == 0
    assert created["version"] == 1 and created["parent_id"] is None
    other = await new_execution(client, h, agent_id="critic")

    got = await client.get(f"/v1/executions/{created['id']}", headers=h)
    assert got.json() == created and got.headers["etag"] == '"1"'

    listed = await client.get("/v1/executions", params={"agent_id": "planner"}, headers=h)
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    by_task = await client.get("/v1/executions", params={"task_id": task.json()["id"]}, headers=h)
    assert [e["id"] for e in by_task.json()["items"]] == [created["id"]]
    page1 = await client.get("/v1/executions", params={"limit": 1}, headers=h)
    assert [e["id"] for e in page1.json()["items"]] == [other["id"]]  # newest first
    page2 = await client.get(
        "/v1/executions", params={"limit": 1, "cursor": page1.json()["next_cursor"]}, headers=h
    )
    assert [e["id"] for e in page2.json()["items"]] == [created["id"]]
    assert page2.json()["next_cursor"] is None

    url = f"/v1/executions/{created['id']}"
    done = await client.patch(url, json={"status": "succeeded"}, headers={**h, "If-Match": '"1"'})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["version"] == 2
    assert done.json()["ended_at"] is not None
    stale = await client.patch(url, json={"metadata": {}}, headers={**h, "If-Match": '"1"'})
    assert_problem(stale, 412, mentions="version")
    finished = await client.get("/v1/executions", params={"status": "succeeded"}, headers=h)
    assert [e["id"] for e in finished.json()["items"]] == [created["id"]]


async def test_steps_store_keyframes_and_patches_and_rebuild_every_state(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    first = await append(client, h, eid, {"kind": "llm", "name": "plan", "state": {"n": 0}})
    assert first["head_seq"] == 1 and first["items"][0]["keyframe"] is True
    batch = [
        {"kind": "tool", "name": f"t{i}", "state_patch": [{"op": "replace", "path": "/n", "value": i}]}
        for i in range(1, 120)
    ]
    batch[10] = {"kind": "note", "output": "thinking"}  # no state change
    appended = await append(client, h, eid, {"steps": batch})
    assert appended["head_seq"] == 120
    assert [s["seq"] for s in appended["items"]] == list(range(2, 121))
    # patches between keyframes, a keyframe at least every interval (50 by default)
    keyframes = [s["seq"] for s in appended["items"] if s["keyframe"]]
    assert keyframes and all(b - a <= 50 for a, b in zip([1, *keyframes], [*keyframes, 121], strict=True))
    assert appended["items"][10]["changed_paths"] == 0

    for seq in (1, 2, 11, 12, 13, 50, 51, 52, 99, 120):
        expected = 10 if seq == 12 else seq - 1  # step 12 (the note) kept step 11's state
        got = await state_at(client, h, eid, seq)
        assert got == {"execution_id": eid, "seq": seq, "state": {"n": expected}}, seq
    head = await client.get(f"/v1/executions/{eid}/state", headers=h)
    assert head.json()["seq"] == 120 and head.json()["state"] == {"n": 119}

    step = await client.get(f"/v1/executions/{eid}/steps/12", params={"include": "state,patch"}, headers=h)
    assert step.status_code == 200, step.text
    body = step.json()
    assert body["kind"] == "note" and body["output"] == "thinking"
    assert body["state"] == {"n": 10} and body["state_patch"] == []
    plain = await client.get(f"/v1/executions/{eid}/steps/12", headers=h)
    assert "state" not in plain.json()


async def test_state_at_a_label_and_at_a_time(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    times = ["2026-01-01T10:00:00Z", "2026-01-01T10:00:05Z", "2026-01-01T10:00:09Z"]
    await append(
        client,
        h,
        eid,
        [
            {"kind": "step", "state": {"v": i}, "started_at": t, "ended_at": t}
            for i, t in enumerate(times)
        ],
    )
    mark = await client.post(
        f"/v1/executions/{eid}/checkpoints", json={"label": "before-tool", "seq": 2}, headers=h
    )
    assert mark.status_code == 201, mark.text
    assert (await state_at(client, h, eid, "before-tool"))["state"] == {"v": 1}
    assert (await state_at(client, h, eid, "2026-01-01T10:00:07+00:00"))["seq"] == 2
    assert (await state_at(client, h, eid, "2026-01-01T11:00:00Z"))["seq"] == 3
    early = await client.get(
        f"/v1/executions/{eid}/state", params={"at": "2026-01-01T09:00:00Z"}, headers=h
    )
    assert_problem(early, 404, mentions="at")
    unknown = await client.get(f"/v1/executions/{eid}/state", params={"at": "nope"}, headers=h)
    assert_problem(unknown, 404, mentions="checkpoint")
    beyond = await client.get(f"/v1/executions/{eid}/state", params={"at": "4"}, headers=h)
    assert_problem(beyond, 404, mentions="step 4")
    bad_time = await client.get(f"/v1/executions/{eid}/state", params={"at": "2026-13-01"}, headers=h)
    assert_problem(bad_time, 422, mentions="RFC 3339")


async def concurrent_writers(service: ExecutionService, tid: str) -> Any:
    """Four writers appending at once to one execution, on the app's loop."""
    execution = await service.create(tid, NewExecution())
    await service.append_steps(tid, execution.id, [NewStep(kind="start", state={"log": []})])

    async def writer(name: str) -> None:
        for i in range(5):
            patch = [{"op": "add", "path": "/log/-", "value": f"{name}{i}"}]
            await service.append_steps(tid, execution.id, [NewStep(kind="w", state_patch=patch)])

    await asyncio.gather(*(writer(name) for name in "abcd"))
    return await service.state_at(tid, execution.id)


async def test_concurrent_writers_lose_no_step(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    runtime = app.state.runtime
    # a service of its own, without the app's event writer
    service = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits())
    head = await in_app_loop(client, concurrent_writers, service, tenant["id"])
    assert head.seq == 21
    assert sorted(head.state["log"]) == sorted(f"{n}{i}" for n in "abcd" for i in range(5))
    # every writer's own steps kept their order
    for name in "abcd":
        mine = [entry for entry in head.state["log"] if entry.startswith(name)]
        assert mine == [f"{name}{i}" for i in range(5)]


async def test_a_finished_execution_keeps_its_status_and_takes_no_step(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    await append(client, h, eid, {"kind": "llm", "state": {"n": 1}})
    url = f"/v1/executions/{eid}"
    done = await client.patch(url, json={"status": "succeeded"}, headers=h)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    for status in ("running", "cancelled", "failed"):
        refused = await client.patch(url, json={"status": status}, headers=h)
        body = assert_problem(refused, 409, mentions="succeeded")
        assert status in body["detail"], body
    late = await client.post(f"{url}/steps", json={"kind": "llm", "state": {"n": 2}}, headers=h)
    assert_problem(late, 409, mentions="succeeded")
    again = await client.patch(url, json={"status": "succeeded", "metadata": {"note": "ok"}}, headers=h)
    assert again.status_code == 200, again.text  # the same status again is a no-op
    after = (await client.get(url, headers=h)).json()
    assert after["status"] == "succeeded" and after["head_seq"] == 1
    assert after["ended_at"] == done.json()["ended_at"] and after["metadata"] == {"note": "ok"}

    cancelled = (await new_execution(client, h))["id"]
    await client.patch(f"/v1/executions/{cancelled}", json={"status": "cancelled"}, headers=h)
    refused = await client.post(f"/v1/executions/{cancelled}/steps", json={"kind": "x"}, headers=h)
    assert_problem(refused, 409, mentions="cancelled")
    back = await client.patch(f"/v1/executions/{cancelled}", json={"status": "running"}, headers=h)
    assert_problem(back, 409, mentions="cancelled")


async def cancel_under_writers(service: ExecutionService, tid: str) -> tuple[int, int]:
    """Four writers append until they are refused; the execution is cancelled
    meanwhile. The head at cancel time and the head at the end."""
    execution = await service.create(tid, NewExecution())

    async def writer() -> None:
        while True:
            try:
                await service.append_steps(tid, execution.id, [NewStep(kind="w", output=1)])
            except Conflict:
                return

    async def cancel() -> int:
        while (await service.get(tid, execution.id)).head_seq < 20:
            await asyncio.sleep(0)
        changes = ExecutionChanges(status="cancelled")
        return (await service.update(tid, execution.id, changes, None)).head_seq

    *_, at_cancel = await asyncio.gather(writer(), writer(), writer(), writer(), cancel())
    return at_cancel, (await service.get(tid, execution.id)).head_seq


async def test_no_step_lands_after_a_cancel_that_races_the_writers(
    app: Litestar, client: Client, tenant: dict[str, Any]
) -> None:
    runtime = app.state.runtime
    service = ExecutionService(runtime.pool, runtime.cursors, ExecutionLimits())
    at_cancel, final = await in_app_loop(client, cancel_under_writers, service, tenant["id"])
    assert at_cancel >= 20
    assert final == at_cancel


async def test_the_openapi_document_describes_the_execution_endpoints(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/v1/executions",
        "/v1/executions/{execution_id}",
        "/v1/executions/{execution_id}/steps",
        "/v1/executions/{execution_id}/steps/{seq}",
        "/v1/executions/{execution_id}/state",
        "/v1/executions/{execution_id}/diff",
        "/v1/executions/{execution_id}/checkpoints",
        "/v1/executions/{execution_id}/checkpoints/{label}",
        "/v1/executions/{execution_id}/rollback",
        "/v1/executions/{execution_id}/fork",
        "/v1/executions/{execution_id}/lineage",
        "/v1/executions/{execution_id}/replay",
    ):
        assert path in paths, path
    search = paths["/v1/memories/search"]["post"]["requestBody"]["content"]["application/json"]
    body = search["schema"]
    if "$ref" in body:  # the body's schema lives in the components
        body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert "as_of" in body["properties"], sorted(body["properties"])
    assert any(p["name"] == "as_of" for p in paths["/v1/memories/{memory_id}"]["get"]["parameters"])
