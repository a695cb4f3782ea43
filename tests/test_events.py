"""The event log: ingest, filters, pagination, service events, retention, and live SSE.

The stream tests run two apps on one database behind real uvicorn servers on
127.0.0.1 and read them with httpx streaming, so fan-out crosses service
instances through PostgreSQL LISTEN/NOTIFY exactly as separate processes would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import uvicorn
from conftest import assert_problem, new_tenant

from api.app import create_app
from memory_service.config import Settings
from memory_service.embeddings import HashEmbedder
from memory_service.events.retention import RetentionWorker


async def in_app_loop(client: Any, function: Any, *args: Any) -> Any:
    """Run a coroutine function on the app's event loop (the test client runs the app
    in its own thread; the app's pool, queues and events belong to that loop)."""
    return await anyio.to_thread.run_sync(lambda: client.blocking_portal.call(function, *args))


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
    writer = client.app.state.runtime.extras["event_writer"]
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


async def test_retention_deletes_old_events_in_batches(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await post_events(client, h, *[ev("old.event") for _ in range(7)])
    await asyncio.sleep(1.1)
    fresh = await post_events(client, h, ev("new.event"))
    worker = RetentionWorker(
        client.app.state.runtime.pool, retention_seconds=1.0, interval_seconds=3600, batch_size=3
    )
    removed = await in_app_loop(client, worker.prune_once)
    assert removed >= 7
    left = (await client.get("/v1/events", headers=h)).json()["items"]
    assert [e["id"] for e in left] == [fresh[0]["id"]]


# -- live streams over real HTTP ------------------------------------------------------
@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    app = create_app(settings, embedder=HashEmbedder(384))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def two_servers(settings: Settings, database_url: str) -> AsyncIterator[tuple[str, str]]:
    fast = settings.with_(sse_heartbeat_seconds=0.5, database_url=database_url)
    async with serve(fast) as first, serve(fast) as second:
        yield first, second


class SSEReader:
    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return {**json.loads(fields["data"]), "sse_id": fields.get("id")}
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("stream ended")


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
            await post_events(http_client(http, first), other["headers"], ev("tool.call", "error"))
            await post_events(
                http_client(http, first),
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
            await post_events(http_client(http, second), h, ev("step.one"), ev("step.two"))
            last = await reader.next_event()
            assert last["type"] == "step.one"
        # disconnected: these happen while nobody listens
        await post_events(http_client(http, second), h, *[ev(f"step.n{i}") for i in range(5)])
        async with http.stream(
            "GET", f"{second}/v1/events/stream", headers={**h, "Last-Event-ID": last["sse_id"]}
        ) as response:
            reader = SSEReader(response)
            resumed = [(await reader.next_event())["type"] for _ in range(6)]
        assert resumed == ["step.two"] + [f"step.n{i}" for i in range(5)]


class http_client:
    """The minimal ``post`` that ``post_events`` needs, against a base URL."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self._http, self._base = http, base

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self._http.post(self._base + path, **kwargs)


@contextlib.asynccontextmanager
async def service_process(database_url: str) -> AsyncIterator[str]:
    """``memory-service serve`` in a separate OS process on the same database."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEMORY_DATABASE_URL": database_url,
        "MEMORY_EMBEDDING_MODEL": "hash:384",
        "MEMORY_SSE_HEARTBEAT_SECONDS": "0.5",
        "MEMORY_LOG_LEVEL": "WARNING",
    }
    process = await anyio.open_process(
        [sys.executable, "-m", "memory_service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert process.returncode is None, "the service process exited"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/ready")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the service process did not become ready"
                await asyncio.sleep(0.3)
        yield base
    finally:
        process.terminate()
        with anyio.fail_after(30):
            await process.wait()
        await process.aclose()


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
            await post_events(http_client(http, in_process), h, ev("cross.process"))
            event = await reader.next_event()
            assert event["type"] == "cross.process"
        # and the other way round, resuming from the last event seen
        async with http.stream(
            "GET",
            f"{in_process}/v1/events/stream",
            headers={**h, "Last-Event-ID": event["sse_id"]},
        ) as response:
            reader = SSEReader(response)
            await post_events(http_client(http, other_process), h, ev("cross.back"))
            assert (await reader.next_event())["type"] == "cross.back"
