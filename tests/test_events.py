"""The event log: ingest, filters, pagination, service events, retention, and live SSE.

The stream tests run two apps on one database behind real uvicorn servers on
127.0.0.1 and read them with httpx streaming, so fan-out crosses service
instances through PostgreSQL LISTEN/NOTIFY exactly as separate processes would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import assert_problem, new_tenant
from helpers import db_rows
from live_http import BaseUrlClient, SSEReader, in_app_loop, serve, service_process

from memory_service.config import Settings
from memory_service.events.retention import RetentionWorker


def ev(type: str, severity: str = "info", **fields: Any) -> dict[str, Any]:
    return {"type": type, "severity": severity, **fields}


async def post_events(client: Any, headers: dict[str, str], *events: dict[str, Any]) -> list[Any]:
    r = await client.post("/v1/events", json={"items": list(events)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["items"]


async def test_ingest_list_filters_and_pages(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    stored = await post_events(
        client,
        h,
        ev("agent.step", "debug", task_id="t1", agent_id="a1", execution_id="x1"),
        ev("tool.call", "info", task_id="t1", duration_ms=12.5, attributes={"tool": "search"}),
        ev("tool.result", "warn", task_id="t2", ts="2030-01-01T00:00:00Z"),
        ev("toolbox.open", "error"),
        ev("error", "error", source="agent"),
    )
    assert [e["sequence"] for e in stored] == sorted(e["sequence"] for e in stored)
    assert stored[1]["attributes"] == {"tool": "search"} and stored[1]["duration_ms"] == 12.5
    assert all(len(e["trace_id"]) == 32 for e in stored)

    async def types(params: dict[str, Any]) -> list[str]:
        r = await client.get("/v1/events", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [e["type"] for e in r.json()["items"]]

    assert await types({"type": "tool"}) == ["tool.call", "tool.result"]
    assert await types({"type": ["agent", "error"]}) == ["agent.step", "error"]
    assert await types({"min_severity": "warn"}) == ["tool.result", "toolbox.open", "error"]
    assert await types({"task_id": "t1"}) == ["agent.step", "tool.call"]
    assert await types({"agent_id": "a1", "execution_id": "x1"}) == ["agent.step"]
    assert await types({"since": "2029-01-01T00:00:00Z"}) == ["tool.result"]
    assert "tool.result" not in await types({"until": "2029-01-01T00:00:00Z"})
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/events", params=params, headers=h)).json()
        seen += [e["sequence"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
        await post_events(client, h, ev("agent.step"))  # inserts while paging
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert {e["sequence"] for e in stored} <= set(seen)


async def test_bad_input_and_isolation(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    before = (await client.get("/v1/events", params={"limit": 1000}, headers=h)).json()["items"]
    for body, status in [
        ({"items": [ev("Bad Type")]}, 422),
        ({"items": [ev("a.b", "fatal")]}, 400),
        ({"items": [ev("a.b"), {"severity": "info"}]}, 400),
        ({"items": [ev("a.b", duration_ms=-1)]}, 422),
        ({"items": [ev("a.b", ts="2024-01-01T00:00:00")]}, 422),
        ({"items": [ev("a.b", attributes={"x": "y" * 20000})]}, 413),
        ({"items": [ev("a.b")] * 1001}, 413),
        ({"items": []}, 422),
        ({"nope": []}, 400),
        ({"items": [ev("ok.one"), ev("a.b", attributes={"k": "\x00"})]}, 422),
    ]:
        assert_problem(await client.post("/v1/events", json=body, headers=h), status)
    after = (await client.get("/v1/events", params={"limit": 1000}, headers=h)).json()["items"]
    assert after == before  # all or nothing: the valid first item was not kept
    for params in (
        {"min_severity": "loud"},
        {"type": "Not Valid"},
        {"cursor": "x"},
        {"limit": 0},
        {"since": "yesterday"},
        {"type": [f"t{i}" for i in range(21)]},
    ):
        r = await client.get("/v1/events", params=params, headers=h)
        assert r.status_code in (400, 422), (params, r.text)
        assert_problem(r, r.status_code)
    r = await client.get("/v1/events/stream", headers={**h, "Last-Event-ID": "abc"})
    assert_problem(r, 422)
    mine = await post_events(client, h, ev("secret.thing"))
    theirs = await client.get(
        "/v1/events", params={"type": "secret"}, headers=other_tenant["headers"]
    )
    assert theirs.json()["items"] == []
    cursor_of_mine = (await client.get("/v1/events", params={"limit": 1}, headers=h)).json()
    if cursor_of_mine["next_cursor"]:
        foreign = await client.get(
            "/v1/events",
            params={"cursor": cursor_of_mine["next_cursor"]},
            headers=other_tenant["headers"],
        )
        assert_problem(foreign, 422)
    assert mine[0]["type"] == "secret.thing"


async def test_service_records_its_own_operations(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    trace = uuid.uuid4().hex
    headers = {**h, "traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"}
    added = await client.post(
        "/v1/memories", json={"content": "the cat sat on the mat"}, headers=headers
    )
    assert added.status_code == 201, added.text
    await client.post("/v1/memories/search", json={"query": "cat", "k": 1}, headers=h)
    await client.delete(f"/v1/memories/{added.json()['id']}", headers=h)
    task = (await client.post("/v1/tasks", json={"title": "t"}, headers=h)).json()
    await client.patch(f"/v1/tasks/{task['id']}", json={"status": "in_progress"}, headers=h)
    writer = client.app.state.runtime.event_writer
    assert await in_app_loop(client, writer.flush)
    items = (await client.get("/v1/events", params={"limit": 100}, headers=h)).json()["items"]
    by_type = {e["type"]: e for e in items}
    assert {
        "memory.added",
        "memory.searched",
        "memory.deleted",
        "task.created",
        "task.status_changed",
    } <= set(by_type)
    assert by_type["memory.added"]["trace_id"] == trace  # the caller's W3C trace continues
    assert by_type["memory.added"]["attributes"]["memory_ids"] == [added.json()["id"]]
    assert "cat" not in json.dumps(items)  # ids and counts only, never content
    assert by_type["task.status_changed"]["attributes"] == {"from": "pending", "to": "in_progress"}
    assert by_type["task.status_changed"]["task_id"] == task["id"]


async def test_retention_deletes_old_events_in_batches(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    h = tenant["headers"]
    await post_events(client, h, *[ev("old.event") for _ in range(7)])
    # aged by two hours where the service keeps the time it received them: no sleeping
    # against the horizon, which a loaded machine can outrun
    db_rows(
        database_url,
        "UPDATE events SET received_at = received_at - interval '2 hours' "
        "WHERE tenant_id = %s AND type = 'old.event' RETURNING seq",
        uuid.UUID(tenant["id"]),
    )
    fresh = await post_events(client, h, ev("new.event"))
    worker = RetentionWorker(
        client.app.state.runtime.pool,
        retention_seconds=3600.0,
        interval_seconds=3600,
        batch_size=3,
        supervisor=client.app.state.runtime.supervisor,
    )
    removed = await in_app_loop(client, worker.prune_once)
    assert removed >= 7
    left = (await client.get("/v1/events", headers=h)).json()["items"]
    assert [e["id"] for e in left] == [fresh[0]["id"]]


# -- live streams over real HTTP ------------------------------------------------------
@pytest.fixture(scope="module")
async def two_servers(settings: Settings, database_url: str) -> AsyncIterator[tuple[str, str]]:
    fast = settings.with_(sse_heartbeat_seconds=0.5, database_url=database_url)
    async with serve(fast) as first, serve(fast) as second:
        yield first, second


async def test_stream_filters_and_fans_out_across_apps(
    client: Any, two_servers: tuple[str, str]
) -> None:
    first, second = two_servers
    tenant = await new_tenant(client)
    other = await new_tenant(client)
    h = tenant["headers"]
    async with httpx.AsyncClient(timeout=20) as http:
        params = {"type": "tool", "min_severity": "warn"}
        async with http.stream(
            "GET", f"{second}/v1/events/stream", params=params, headers=h
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SSEReader(response)
            await asyncio.sleep(0.3)
            await post_events(
                BaseUrlClient(http, first), other["headers"], ev("tool.call", "error")
            )
            await post_events(
                BaseUrlClient(http, first),
                h,
                ev("tool.call", "info"),
                ev("agent.step", "error"),
                ev("tool.call", "warn"),
                ev("tool.result", "error", task_id="t9"),
            )
            got = [await reader.next_event(), await reader.next_event()]
            assert [(e["type"], e["severity"]) for e in got] == [
                ("tool.call", "warn"),
                ("tool.result", "error"),
            ]
            assert got[0]["sse_id"] == str(got[0]["sequence"])
            with pytest.raises(TimeoutError):  # nothing else matches: only heartbeats come
                await reader.next_event(timeout=1.5)
            assert "heartbeat" in reader.comments


async def test_resume_with_last_event_id_loses_nothing(
    client: Any, two_servers: tuple[str, str]
) -> None:
    first, second = two_servers
    tenant = await new_tenant(client)
    h = tenant["headers"]
    async with httpx.AsyncClient(timeout=20) as http:
        async with http.stream("GET", f"{first}/v1/events/stream", headers=h) as response:
            reader = SSEReader(response)
            await asyncio.sleep(0.3)
            await post_events(BaseUrlClient(http, second), h, ev("step.one"), ev("step.two"))
            last = await reader.next_event()
            assert last["type"] == "step.one"
        # disconnected: these happen while nobody listens
        await post_events(BaseUrlClient(http, second), h, *[ev(f"step.n{i}") for i in range(5)])
        async with http.stream(
            "GET", f"{second}/v1/events/stream", headers={**h, "Last-Event-ID": last["sse_id"]}
        ) as response:
            reader = SSEReader(response)
            resumed = [(await reader.next_event())["type"] for _ in range(6)]
        assert resumed == ["step.two"] + [f"step.n{i}" for i in range(5)]


async def test_stream_is_live_across_os_processes(
    client: Any, database_url: str, two_servers: tuple[str, str]
) -> None:
    tenant = await new_tenant(client)
    h = tenant["headers"]
    in_process, _ = two_servers
    async with (
        service_process(database_url) as other_process,
        httpx.AsyncClient(timeout=20) as http,
    ):
        # a stream served by the other process sees events written through this one
        async with http.stream("GET", f"{other_process}/v1/events/stream", headers=h) as response:
            assert response.status_code == 200
            reader = SSEReader(response)
            await asyncio.sleep(0.3)
            await post_events(BaseUrlClient(http, in_process), h, ev("cross.process"))
            event = await reader.next_event()
            assert event["type"] == "cross.process"
        # and the other way round, resuming from the last event seen
        async with http.stream(
            "GET",
            f"{in_process}/v1/events/stream",
            headers={**h, "Last-Event-ID": event["sse_id"]},
        ) as response:
            reader = SSEReader(response)
            await post_events(BaseUrlClient(http, other_process), h, ev("cross.back"))
            assert (await reader.next_event())["type"] == "cross.back"


async def test_a_time_offset_postgresql_cannot_read_is_stored_as_its_instant(client: Any) -> None:
    """RFC 3339 allows offsets to 23:59, PostgreSQL's input to 15:59: the service sends
    times in UTC, so any valid offset is the same instant."""
    h = (await new_tenant(client))["headers"]
    for ts, utc in [
        ("2026-01-07T19:05:05-21:58", "2026-01-08T17:03:05Z"),
        ("0113-01-07T19:05:05+23:59", "0113-01-06T19:06:05Z"),
    ]:
        r = await client.post("/v1/events", json=[{"type": "clock.test", "ts": ts}], headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["items"][0]["ts"] == utc
