"""Workflow runs over HTTP: DAG order, fan-out/fan-in, retries, leases, signals, commands."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from conftest import assert_problem
from test_supervision import runtime_of
from workflow_helpers import (
    DIAMOND,
    claim,
    complete,
    fail,
    put_workflow,
    run_state,
    start,
    step,
    wait_for,
    work_until,
)


async def test_diamond_runs_in_dependency_order(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 3})
    first = await claim(client, h, max_steps=10)
    assert [a["step_id"] for a in first] == ["a"] and first[0]["input"] == {"n": 3}
    assert (await complete(client, h, first[0], {"value": 3})).status_code == 200
    middle = await claim(client, h, max_steps=10)
    assert sorted(a["step_id"] for a in middle) == ["b", "c"]  # fan-out after a only
    by_step = {a["step_id"]: a for a in middle}
    assert by_step["b"]["input"] == {"x": 3, "op": "double"}
    await complete(client, h, by_step["b"], {"value": 6})
    assert await claim(client, h) == []  # d waits for c as well
    await complete(client, h, by_step["c"], {"value": 9})
    finished = await work_until(client, h, run["id"])
    assert finished["status"] == "completed"
    assert finished["output"] == {"e": {"value": 15}}
    assert finished["progress"] == {"completed": 5, "total": 5}
    assert all(s["attempts"] == 1 and s["status"] == "completed" for s in finished["steps"])


async def test_map_fans_out_and_fan_in_sees_outputs_in_order(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    body = {
        "steps": [
            {"id": "m", "kind": "map", "over": {"$ref": "input.items"},
             "step": {"kind": "task", "queue": "mapq",
                      "input": {"x": {"$ref": "item"}, "i": {"$ref": "index"}}}},
            {"id": "total", "kind": "task", "queue": "mapq", "depends_on": ["m"],
             "input": {"all": {"$ref": "steps.m.output"}}},
        ]
    }  # fmt: skip
    name = await put_workflow(client, h, body)
    run = await start(client, h, name, {"items": [5, 1, 4]})
    children = await claim(client, h, ["mapq"], max_steps=10)
    assert sorted(a["step_id"] for a in children) == ["m[0]", "m[1]", "m[2]"]
    for attempt in reversed(children):  # completion order must not matter
        x, i = attempt["input"]["x"], attempt["input"]["i"]
        assert (await complete(client, h, attempt, {"y": x * 10, "i": i})).status_code == 200
    fan_in = await claim(client, h, ["mapq"])
    assert fan_in[0]["input"] == {
        "all": [{"y": 50, "i": 0}, {"y": 10, "i": 1}, {"y": 40, "i": 2}]
    }
    await complete(client, h, fan_in[0], {"sum": 100})
    done = await run_state(client, h, run["id"])
    assert done["status"] == "completed" and done["output"] == {"total": {"sum": 100}}


async def test_retries_back_off_and_expired_leases_are_redelivered(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    body = {"steps": [{"id": "s", "kind": "task", "queue": "retry",
                       "retry": {"max_attempts": 4, "backoff_s": 0.4, "max_backoff_s": 0.5}}]}  # fmt: skip
    name = await put_workflow(client, h, body)
    run = await start(client, h, name, {})
    [first] = await claim(client, h, ["retry"])
    assert (await fail(client, h, first, "flaky")).status_code == 200
    assert_problem(await fail(client, h, first, "again"), 409)  # settled once only
    failed_at = time.monotonic()
    assert await claim(client, h, ["retry"]) == []  # backing off
    [second] = await claim(client, h, ["retry"], wait_s=3, lease_s=0.3)
    assert time.monotonic() - failed_at >= 0.3 and second["attempt"] == 2
    # the worker holding attempt 2 stalls: its lease runs out and the step comes back
    [third] = await claim(client, h, ["retry"], wait_s=5)
    assert third["attempt"] == 3
    late = await complete(client, h, second, {"from": 2})
    assert_problem(late, 409)
    wrong = await complete(client, h, {**third, "lease_token": str(uuid.uuid4())}, {"x": 1})
    assert_problem(wrong, 409, mentions="lease token")
    assert (await complete(client, h, third, {"from": 3})).status_code == 200
    assert_problem(await complete(client, h, third, {"from": 3}), 409)
    done = await run_state(client, h, run["id"])
    assert done["status"] == "completed" and step(done, "s")["output"] == {"from": 3}
    assert step(done, "s")["attempts"] == 3
    events = await client.get(
        "/v1/events", params={"workflow_run_id": run["id"], "limit": 100}, headers=h
    )
    types = [e["type"] for e in events.json()["items"]]
    assert types.count("workflow.step.retrying") == 2 and types[-1] == "workflow.run.completed"


async def failed_in_the_middle(
    client: Any, h: dict[str, str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A diamond run whose step a completed and whose step b failed for good; the run
    and the attempts of its middle steps (b and c) by step id."""
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 2})
    [a] = await claim(client, h)
    await complete(client, h, a, {"value": 2})
    middle = {x["step_id"]: x for x in await claim(client, h, max_steps=5)}
    await fail(client, h, middle["b"], "bad data", retryable=False)
    return run, middle


async def test_exhausted_retries_fail_the_run_and_retry_resumes_it(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    run, middle = await failed_in_the_middle(client, h)
    failed = await run_state(client, h, run["id"])
    assert failed["status"] == "failed" and "bad data" in failed["error"]
    assert step(failed, "b")["status"] == "failed" and step(failed, "c")["status"] == "cancelled"
    assert_problem(await complete(client, h, middle["c"], {"value": 4}), 409)
    r = await client.post(f"/v1/workflow-runs/{run['id']}/retry", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "running"
    finished = await work_until(client, h, run["id"])
    assert finished["status"] == "completed" and finished["output"] == {"e": {"value": 8}}
    assert step(finished, "a")["attempts"] == 1  # the completed step was not run again
    # the failed attempt's execution stays failed; the retry records in a fork of it
    first, retried = run["execution_id"], finished["execution_id"]
    assert retried != first
    deadline = time.monotonic() + 10
    while (fork := await execution(client, h, retried))["status"] == "running":
        assert time.monotonic() < deadline, fork
        await asyncio.sleep(0.05)
    assert fork["status"] == "succeeded" and fork["parent_id"] == first
    assert (await execution(client, h, first))["status"] == "failed"
    timeline = await client.get(f"/v1/executions/{retried}/steps", headers=h)
    names = [s["name"] for s in timeline.json()["items"]]
    assert names[0] == "a" and sorted(names[1:]) == ["b", "c", "d", "e"], names


async def test_a_retry_before_the_timeline_caught_up_keeps_every_step(
    client: Any, tenant: dict[str, Any], monkeypatch: Any
) -> None:
    """The failed run's appends still wait when it is retried: they go into the first
    execution before it is closed and forked, so it holds what the run did."""
    # the follower is never told: only the catch-up (2 s after) or the retry appends
    monkeypatch.setattr(runtime_of(client).workflows.timeline, "touched", lambda runs: None)
    h = tenant["headers"]
    run, _ = await failed_in_the_middle(client, h)
    r = await client.post(f"/v1/workflow-runs/{run['id']}/retry", headers=h)
    assert r.status_code == 200, r.text
    first = run["execution_id"]
    assert (await execution(client, h, first))["status"] == "failed"
    steps = (await client.get(f"/v1/executions/{first}/steps", headers=h)).json()["items"]
    assert [s["name"] for s in steps] == ["a"]
    fork = r.json()["execution_id"]
    assert (await execution(client, h, fork))["parent_id"] == first


async def execution(client: Any, h: dict[str, str], execution_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/executions/{execution_id}", headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_idempotency_key_answers_the_same_run(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    first = await client.post(
        f"/v1/workflows/{name}/runs", json={"input": {"n": 1}, "idempotency_key": "k1"}, headers=h
    )
    again = await client.post(
        f"/v1/workflows/{name}/runs", json={"input": {"n": 1}, "idempotency_key": "k1"}, headers=h
    )
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(
        f"/v1/workflows/{name}/runs", json={"input": {"n": 2}, "idempotency_key": "k1"}, headers=h
    )
    assert_problem(other, 409, mentions="idempotency_key")
    runs = (await client.get("/v1/workflow-runs", params={"workflow": name}, headers=h)).json()
    assert len(runs["items"]) == 1


async def test_cancel_while_a_step_is_claimed(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 1})
    [a] = await claim(client, h)
    r = await client.post(f"/v1/workflow-runs/{run['id']}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert all(s["status"] == "cancelled" for s in r.json()["steps"])
    assert_problem(await complete(client, h, a, {"value": 1}), 409)
    assert await claim(client, h) == []
    assert_problem(await client.post(f"/v1/workflow-runs/{run['id']}/cancel", headers=h), 409)
    assert_problem(
        await client.post(f"/v1/workflow-runs/{run['id']}/signals/go", json={}, headers=h), 409
    )


async def test_signals_with_and_without_timeout(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    body = {
        "steps": [
            {"id": "approve", "kind": "wait_for_signal", "input": {"signal": "approved"}},
            {"id": "act", "kind": "task", "queue": "sig", "depends_on": ["approve"],
             "input": {"by": {"$ref": "steps.approve.output.payload.by"}}},
        ]
    }  # fmt: skip
    name = await put_workflow(client, h, body)
    run = await start(client, h, name, {})
    assert step(run, "approve")["status"] == "scheduled"
    assert await claim(client, h, ["sig"]) == []
    r = await client.post(
        f"/v1/workflow-runs/{run['id']}/signals/approved", json={"payload": {"by": "ann"}}, headers=h
    )
    assert r.status_code == 202 and r.json()["released_steps"] == 1
    [act] = await claim(client, h, ["sig"])
    assert act["input"] == {"by": "ann"}
    timed = {"steps": [{"id": "w", "kind": "wait_for_signal", "timeout_s": 0.3,
                        "input": {"signal": "never"}}]}  # fmt: skip
    timed_run = await start(client, h, await put_workflow(client, h, timed), {})
    failed = await wait_for(client, h, timed_run["id"], lambda r: r["status"] != "running")
    assert failed["status"] == "failed" and "no signal 'never'" in failed["error"]
    carry_on = {"steps": [{"id": "w", "kind": "wait_for_signal", "timeout_s": 0.2,
                           "input": {"signal": "x", "on_timeout": "continue"}}]}  # fmt: skip
    cont = await start(client, h, await put_workflow(client, h, carry_on), {})
    done = await wait_for(client, h, cont["id"], lambda r: r["status"] != "running")
    assert done["status"] == "completed" and done["output"]["w"]["timed_out"] is True


async def test_durable_sleep_and_unresolvable_reference(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    body = {"steps": [{"id": "nap", "kind": "sleep", "input": {"seconds": 0.4}},
                      {"id": "after", "kind": "task", "queue": "nap", "depends_on": ["nap"]}]}  # fmt: skip
    run = await start(client, h, await put_workflow(client, h, body), {})
    began = time.monotonic()
    [after] = await claim(client, h, ["nap"], wait_s=5)
    assert time.monotonic() - began >= 0.3 and after["step_id"] == "after"
    broken = {"steps": [{"id": "s", "kind": "task", "input": {"x": {"$ref": "input.missing.y"}}}]}
    bad = await start(client, h, await put_workflow(client, h, broken), {"other": 1})
    assert bad["status"] == "failed"
    assert "input.missing" in step(bad, "s")["error"]
    assert (await run_state(client, h, run["id"]))["status"] == "running"


async def test_fork_reuses_outputs_before_the_step(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 3})
    done = await work_until(client, h, run["id"])
    assert done["output"] == {"e": {"value": 15}}
    r = await client.post(
        f"/v1/workflow-runs/{run['id']}/fork",
        json={"from_step": "b", "input_patch": {"note": "again"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    fork = r.json()
    assert fork["forked_from"] == run["id"] and fork["input"] == {"n": 3, "note": "again"}
    assert step(fork, "a")["reused"] and step(fork, "a")["output"] == {"value": 3}
    seen: list[str] = []

    def tracked(step_input: dict[str, Any]) -> dict[str, Any]:
        seen.append(step_input.get("op", "a"))
        return {"value": 100} if step_input.get("op") == "double" else _compute(step_input)

    finished = await work_until(client, h, fork["id"], tracked)
    assert "a" not in seen and finished["output"] == {"e": {"value": 109}}
    missing = await client.post(
        f"/v1/workflow-runs/{run['id']}/fork", json={"from_step": "zz"}, headers=h
    )
    assert_problem(missing, 422, mentions="zz")


def _compute(step_input: dict[str, Any]) -> dict[str, Any]:
    from workflow_helpers import compute

    return compute(step_input)


async def test_memory_builtins_use_the_tenants_memories(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    body = {
        "steps": [
            {"id": "remember", "kind": "memory.add",
             "input": {"content": {"$ref": "input.fact"}, "user_id": "u1"}},
            {"id": "recall", "kind": "memory.search", "depends_on": ["remember"],
             "input": {"query": {"$ref": "input.question"}, "user_id": "u1", "k": 3}},
        ]
    }  # fmt: skip
    run = await start(
        client, h, await put_workflow(client, h, body),
        {"fact": "The staging database lives in Frankfurt", "question": "where is staging?"},
    )  # fmt: skip
    done = await wait_for(client, h, run["id"], lambda r: r["status"] != "running")
    assert done["status"] == "completed", done
    added = step(done, "remember")["output"]
    hits = step(done, "recall")["output"]["results"]
    assert hits[0]["id"] == added["id"] and "Frankfurt" in hits[0]["content"]
    listed = await client.get("/v1/memories", params={"user_id": "u1"}, headers=h)
    assert [m["id"] for m in listed.json()["items"]] == [added["id"]]


async def test_tenant_isolation(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h, other = tenant["headers"], other_tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 1})
    assert_problem(await client.get(f"/v1/workflows/{name}", headers=other), 404)
    assert_problem(await client.post(f"/v1/workflows/{name}/runs", json={}, headers=other), 404)
    assert_problem(await client.get(f"/v1/workflow-runs/{run['id']}", headers=other), 404)
    for command in ("cancel", "retry", "signals/x"):
        r = await client.post(f"/v1/workflow-runs/{run['id']}/{command}", headers=other)
        assert_problem(r, 404)
    assert (await client.get("/v1/workflow-runs", headers=other)).json()["items"] == []
    assert await claim(client, other, wait_s=0.2) == []
    [a] = await claim(client, h)
    assert_problem(await complete(client, other, a, {"value": 1}), 404)
    events = await client.get("/v1/events", params={"workflow_run_id": run["id"]}, headers=other)
    assert events.json()["items"] == []
    mine = await client.get("/v1/events", params={"workflow_run_id": run["id"]}, headers=h)
    assert [e["type"] for e in mine.json()["items"]][:3] == [
        "workflow.run.started", "workflow.step.ready", "workflow.step.claimed",
    ]  # fmt: skip


async def test_bad_worker_input(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for field, value in (("wait_s", 31), ("lease_s", 0), ("max_steps", 0), ("queues", [])):
        body = {"worker_id": "w", "queues": ["default"], field: value}
        r = await client.post("/v1/workers/claim", json=body, headers=h)
        assert_problem(r, 422, mentions=field)
    r = await client.post("/v1/workers/claim", json={"worker_id": "w", "queues": ["_builtin"]}, headers=h)
    assert_problem(r, 422, mentions="queues[0]")
    name = await put_workflow(client, h, DIAMOND)
    await start(client, h, name, {"n": 1})
    [a] = await claim(client, h, lease_s=1)
    beat = await client.post(
        f"/v1/workers/attempts/{a['id']}/heartbeat",
        json={"lease_token": a["lease_token"], "lease_s": 60},
        headers=h,
    )
    assert beat.status_code == 200 and beat.json()["lease_expires_at"] > a["lease_expires_at"]
    for token, lease, status in ((a["lease_token"], 0, 422), (str(uuid.uuid4()), 5, 409)):
        r = await client.post(
            f"/v1/workers/attempts/{a['id']}/heartbeat",
            json={"lease_token": token, "lease_s": lease},
            headers=h,
        )
        assert_problem(r, status)
    assert_problem(await complete(client, h, a, {"blob": "x" * 300_000}), 413)
    assert (await complete(client, h, a, {"value": 1})).status_code == 200  # nothing half-done
    r = await client.post("/v1/workers/attempts/not-a-uuid/complete", json={"lease_token": "t"}, headers=h)
    assert_problem(r, 422)
    big = await client.post(f"/v1/workflows/{name}/runs", json={"input": {"b": "x" * 300_000}}, headers=h)
    assert_problem(big, 413)
    await asyncio.sleep(0)


async def test_a_run_whose_execution_was_finished_elsewhere_goes_on(
    client: Any, tenant: dict[str, Any], caplog: Any
) -> None:
    """Someone with the tenant's key closes the run's execution through the executions
    API: the run still completes, its execution stays as that client left it, and the
    timeline says so once instead of failing on every pass."""
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    run = await start(client, h, name, {"n": 1})
    closed = await client.patch(
        f"/v1/executions/{run['execution_id']}", json={"status": "failed"}, headers=h
    )
    assert closed.status_code == 200, closed.text
    finished = await work_until(client, h, run["id"])
    assert finished["status"] == "completed"
    execution = await client.get(f"/v1/executions/{run['execution_id']}", headers=h)
    assert execution.json()["status"] == "failed"
    await asyncio.sleep(0.5)  # the timeline follower's passes after the run finished
    records = [r for r in caplog.records if run["id"] in r.getMessage()]
    assert not [r for r in records if r.levelname == "ERROR"], [r.getMessage() for r in records]
    assert any("takes no more steps" in r.getMessage() for r in records)
