"""Supervised background work, on a real runtime and the real app.

A loop that raises is logged with its traceback, counted in ``/metrics``,
deducted from ``/v1/health/score`` and restarted; one that keeps failing turns
``/ready`` 503 naming it. The test seam is the runtime's own supervisor: a test
registers an extra loop on it, exactly as a service registers its own. The event
writer drops a poison event alone, and a workflow that runs a ``task`` step and
then a ``memory.add`` step leaves the event log recording.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import new_tenant
from litestar.testing import AsyncTestClient
from live_http import in_app_loop
from workflow_helpers import put_workflow, start, step, wait_for, work_until

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.infra.supervisor import Loop
from memory_service.runtime import Runtime


@pytest.fixture(scope="module")
async def fast(settings: Settings, database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """An app whose supervisor restarts within a fraction of a second and calls a loop
    failed after three failures a minute (its own, so the session's app stays healthy).
    Its event writer waits 0.4 s for company, so that events emitted close together by
    different paths of the service share a batch, as they do under load."""
    tuned = settings.with_(
        database_url=database_url,
        event_writer_linger_ms=400,
        background_restart_initial_s=0.05,
        background_restart_max_s=0.2,
        background_failure_threshold=3,
        background_failure_window_s=60.0,
    )
    async with AsyncTestClient(app=create_app(tuned, embedder=HashEmbedder(384)), timeout=30) as c:
        yield c


def runtime_of(client: Any) -> Runtime:
    runtime = client.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


async def spawn(client: Any, name: str, body: Callable[[], Awaitable[None]]) -> Loop:
    async def register() -> Loop:
        return runtime_of(client).supervisor.spawn(name, body)

    loop: Loop = await in_app_loop(client, register)
    return loop


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_loop_that_raises_is_logged_counted_deducted_and_restarted(
    fast: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await new_tenant(fast)
    calls: list[float] = []

    async def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise ValueError("the launch code is swordfish")  # a message that must stay in the log
        await asyncio.Event().wait()  # then runs until stopped

    with caplog.at_level(logging.ERROR, logger="memory_service.infra.supervisor"):
        loop = await spawn(fast, "test-flaky", flaky)
        await eventually(lambda: _true(len(calls) >= 3))
        failures = [r for r in caplog.records if "test-flaky" in r.getMessage()]
    try:
        # logged once per failure, with the loop's name and the traceback
        assert len(failures) == 2, [r.getMessage() for r in failures]
        assert all(r.exc_info and r.exc_info[0] is ValueError for r in failures)
        # backing off: each restart waits twice as long as the one before (the wall clock
        # only bounds it from below: a busy event loop can stretch a wait, never shorten it)
        waits = [float(re.search(r"restarting in ([0-9.]+)s", r.getMessage())[1]) for r in failures]
        assert waits == [0.05, 0.1], waits
        assert calls[1] - calls[0] >= 0.04 and calls[2] - calls[1] >= 0.09

        text = (await fast.get("/metrics")).text
        assert re.search(r'memory_background_failures_total\{loop="test-flaky"\} 2\.0', text)
        assert re.search(r'memory_background_restarts_total\{loop="test-flaky"\} 2\.0', text)
        assert re.search(r'memory_background_failures_total\{loop="event-writer"\} 0\.0', text)

        health = (await fast.get("/v1/health/score", headers=tenant["headers"])).json()
        parts = {c["name"]: c for c in health["components"]}
        flaky_part = parts["background.test-flaky"]
        assert flaky_part["deduction"] > 0 and flaky_part["status"] == "degraded"
        assert "test-flaky" in flaky_part["reason"] and "ValueError" in flaky_part["reason"]
        assert health["score"] <= 100 - flaky_part["deduction"]
        loops = {s["name"]: s for s in health["loops"]}
        assert loops["test-flaky"] == {
            "name": "test-flaky", "kind": "loop", "state": "running", "restarts": 2,
            "failures": 2, "recent_failures": 2, "last_error": "ValueError",
        }  # fmt: skip
        for name in ("event-writer", "event-fanout", "event-retention", "workflow-driver",
                     "workflow-timeline", "pgvector-index-worker", "change-feed-retention"):  # fmt: skip
            assert loops[name]["state"] == "running", loops[name]
        assert "swordfish" not in str(health) and "swordfish" not in text
        assert (await fast.get("/ready")).status_code == 200  # two failures are not three
    finally:
        await in_app_loop(fast, loop.stop)
    # stopping it is not a failure
    stopped = next(s for s in runtime_of(fast).supervisor.states() if s.name == "test-flaky")
    assert (stopped.state, stopped.failures, stopped.restarts) == ("stopped", 2, 2)


async def test_a_loop_that_keeps_failing_makes_ready_503_naming_it(fast: Any) -> None:
    tenant = await new_tenant(fast)

    async def doomed() -> None:
        raise OSError("the disk is full")

    loop = await spawn(fast, "test-doomed", doomed)
    try:

        async def not_ready() -> bool:
            return (await fast.get("/ready")).status_code == 503

        await eventually(not_ready)
        body = (await fast.get("/ready")).json()
        assert body["checks"]["background"] == "failing: test-doomed (OSError)", body
        assert body["checks"]["database"] == "ok"
        health = (await fast.get("/v1/health/score", headers=tenant["headers"])).json()
        part = next(c for c in health["components"] if c["name"] == "background.test-doomed")
        assert part["status"] == "failing" and "/ready" in part["reason"]
        assert next(s for s in health["loops"] if s["name"] == "test-doomed")["state"] == "failed"
        text = (await fast.get("/metrics")).text
        assert 'memory_background_loop_failed{loop="test-doomed"} 1.0' in text
    finally:
        await in_app_loop(fast, loop.stop)
    # stopping is not a failure, and a stopped loop no longer holds readiness back
    ready = await fast.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["background"] == "ok"


async def test_a_poison_event_is_dropped_alone_and_its_batch_mates_are_written(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    runtime = runtime_of(client)
    mine, theirs = uuid.UUID(tenant["id"]), uuid.UUID(other_tenant["id"])
    before = dict(runtime.event_writer.dropped_by)
    failures_before = _failures(runtime, "event-writer")

    async def emit_one_batch() -> None:
        writer = runtime.event_writer
        # queued back to back, so the writer takes them as one batch
        await writer.emit(mine, "test.before", attributes={"n": 1})
        await writer.emit(mine, "test.poison", attributes={"unwritable": object()})
        await writer.emit(theirs, "test.other_tenant", attributes={"n": 2})
        await writer.emit(mine, "test.after", attributes={"n": 3})
        assert await writer.flush(10)

    await in_app_loop(client, emit_one_batch)
    types = await _event_types(client, tenant["headers"])
    assert "test.before" in types and "test.after" in types and "test.poison" not in types
    assert "test.other_tenant" in await _event_types(client, other_tenant["headers"])
    after = runtime.event_writer.dropped_by
    assert sum(after.values()) - sum(before.values()) == 1
    assert after["poison"] == before["poison"] + 1, after
    assert _failures(runtime, "event-writer") == failures_before  # the loop never died
    text = (await client.get("/metrics")).text
    assert re.search(r'memory_events_dropped_total\{reason="poison"\} [1-9]', text), text

    # a tenant id that is not a UUID is refused where it is made, not in a batch
    async def emit_text_tenant() -> None:
        await runtime.event_writer.emit(tenant["id"], "test.text_tenant")  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="UUID"):
        await in_app_loop(client, emit_text_tenant)


async def test_events_are_recorded_after_a_task_step_then_a_memory_add_step(fast: Any) -> None:
    client = fast
    tenant = await new_tenant(client)
    h = tenant["headers"]
    body = {"steps": [
        {"id": "t", "kind": "task", "input": {"n": 1}},
        {"id": "m", "kind": "memory.add", "depends_on": ["t"],
         "input": {"content": {"$ref": "steps.t.output.fact"}}},
    ]}  # fmt: skip
    run = await start(client, h, await put_workflow(client, h, body), {})
    done = await work_until(client, h, run["id"], lambda _: {"fact": "the moon is made of rock"})
    assert done["status"] == "completed", done
    runtime = runtime_of(client)

    async def read_run() -> Any:
        return await runtime.workflows.service.get_run(uuid.UUID(tenant["id"]), run["id"])

    assert isinstance((await in_app_loop(client, read_run)).tenant_id, uuid.UUID)
    # both steps reach the execution's timeline, and the memory step's own event is logged
    await wait_for(client, h, run["id"], lambda r: r["status"] == "completed")

    async def recorded() -> bool:
        types = await _event_types(client, h)
        return types.count("execution.step") >= 2 and "memory.added" in types

    await eventually(recorded)
    memory_id = step(done, "m")["output"]["id"]
    assert memory_id
    # and the writer still writes what comes after
    r = await client.post("/v1/memories", json={"content": "written after the run"}, headers=h)
    assert r.status_code == 201, r.text

    async def later_recorded() -> bool:
        return (await _event_types(client, h)).count("memory.added") >= 2

    await eventually(later_recorded)
    assert _failures(runtime, "event-writer") == 0


async def _event_types(client: Any, headers: dict[str, str]) -> list[str]:
    r = await client.get("/v1/events", params={"limit": 500}, headers=headers)
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["items"]]


def _failures(runtime: Runtime, name: str) -> int:
    return next(s.failures for s in runtime.supervisor.states() if s.name == name)


async def _true(value: bool) -> bool:
    return value
