"""Circuit breakers, and recovery from a database restart under load without a restart.

The restart test runs its own embedded PostgreSQL in a dedicated data directory,
stops it with ``pg_ctl`` while writers and readers hammer the app, starts it
again, and checks the promises: no 5xx but 503, every acknowledged write is
still there, reads recover by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread
import httpx
import numpy as np
import pytest
from conftest import ADMIN_TOKEN, assert_problem, new_tenant, server_data_dir
from litestar.testing import AsyncTestClient
from live_http import SSEReader, in_app_loop, serve

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.errors import CircuitOpen, Conflict, Unavailable
from memory_service.infra import db
from memory_service.infra.resilience import CircuitBreaker, is_database_failure


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("database", failure_threshold=3, reset_seconds=5, clock=clock)

    def fail() -> None:
        with contextlib.suppress(Unavailable), breaker.guard(is_database_failure):
            raise Unavailable("down")

    # a conflict proves the database answered: it never counts
    for _ in range(5):
        with contextlib.suppress(Conflict), breaker.guard(is_database_failure):
            raise Conflict("dup")
    assert breaker.state == "closed"
    fail()
    fail()
    assert breaker.state == "closed"
    fail()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after == 5
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.before_call() is True  # the one probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller waits for the probe's verdict
    breaker.record_failure(probe=True)
    assert breaker.state == "open"
    clock.now += 5
    with breaker.guard(is_database_failure):
        pass
    assert breaker.state == "closed" and breaker.times_opened == 2


class SwitchableEmbedder:
    """A real embedder that can be switched off, as a crashed model server would be."""

    def __init__(self) -> None:
        self.inner = HashEmbedder(384)
        self.working = True

    @property
    def dimension(self) -> int:
        return 384

    @property
    def model_name(self) -> str:
        return "switchable"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not self.working:
            raise RuntimeError("model server is gone")
        return self.inner.embed(texts)


async def test_embedder_breaker_fails_fast_and_recovers(
    settings: Settings, database_url: str
) -> None:
    embedder = SwitchableEmbedder()
    app = create_app(
        settings.with_(
            database_url=database_url, breaker_failure_threshold=2, breaker_reset_seconds=1
        ),
        embedder=embedder,
    )
    async with AsyncTestClient(app=app, timeout=30) as client:
        h = (await new_tenant(client))["headers"]
        embedder.working = False
        for i in range(2):
            r = await client.post("/v1/memories", json={"content": f"fails {i}"}, headers=h)
            assert_problem(r, 503)
            assert int(r.headers["retry-after"]) >= 1
        fast = await client.post("/v1/memories", json={"content": "refused"}, headers=h)
        body = assert_problem(fast, 503)
        assert body["title"] == "Circuit open"
        assert (
            'memory_circuit_state{dependency="embedder"} 2.0' in (await client.get("/metrics")).text
        )
        score = (await client.get("/v1/health/score", headers=h)).json()
        assert any("embedder circuit is open" in reason for reason in score["reasons"])
        # reads that need no model keep working while the embedder is down
        assert (await client.get("/v1/memories", headers=h)).status_code == 200
        # every 5xx is recorded as an error event of the tenant, with the route template
        writer = client.app.state.runtime.event_writer
        assert await in_app_loop(client, writer.flush)
        errors = (await client.get("/v1/events", params={"type": "error"}, headers=h)).json()
        assert len(errors["items"]) == 3
        assert errors["items"][0]["severity"] == "error"
        assert errors["items"][0]["attributes"] == {
            "method": "POST",
            "route": "/v1/memories",
            "status": 503,
        }
        embedder.working = True
        await asyncio.sleep(1.1)
        ok = await client.post("/v1/memories", json={"content": "works again"}, headers=h)
        assert ok.status_code == 201, ok.text
        listed = (await client.get("/v1/memories", headers=h)).json()["items"]
        assert [m["content"] for m in listed] == ["works again"]  # the failed adds left nothing


async def _restart_postgres(pgdata: Path, down_seconds: float) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    server = db._embedded_servers[pgdata]
    await anyio.to_thread.run_sync(
        lambda: pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)
    )
    await asyncio.sleep(down_seconds)
    await anyio.to_thread.run_sync(server.ensure_postgres_running)


@pytest.mark.slow
async def test_database_restart_under_load() -> None:
    data_dir = server_data_dir("restart")
    own = Settings(
        data_dir=str(data_dir),
        admin_token=ADMIN_TOKEN,
        db_pool_max=6,
        db_pool_timeout_seconds=2,
        breaker_failure_threshold=3,
        breaker_reset_seconds=1,
        auth_cache_seconds=60,
        sse_heartbeat_seconds=0.5,
    )
    acknowledged: list[str] = []  # memories answered 201
    acknowledged_events: list[str] = []  # events answered 201
    streamed: list[str] = []  # event ids that reached a stream opened before the outage
    statuses: list[tuple[str, int, str | None]] = []
    stop = asyncio.Event()
    try:
        async with serve(own) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            tenant = await new_tenant(http)  # type: ignore[arg-type]  # any client that posts
            h = tenant["headers"]

            async def writer(n: int) -> None:
                i = 0
                while not stop.is_set():
                    r = await http.post(
                        "/v1/memories", json={"content": f"w{n} item {i}"}, headers=h
                    )
                    statuses.append(("write", r.status_code, r.headers.get("retry-after")))
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])
                    i += 1
                    await asyncio.sleep(0.02)

            async def event_writer() -> None:
                while not stop.is_set():
                    r = await http.post(
                        "/v1/events", json={"items": [{"type": "load.tick"}]}, headers=h
                    )
                    statuses.append(("event", r.status_code, r.headers.get("retry-after")))
                    if r.status_code == 201:
                        acknowledged_events.append(r.json()["items"][0]["id"])
                    await asyncio.sleep(0.05)

            async def reader() -> None:
                while not stop.is_set():
                    r = await http.get("/v1/memories", params={"limit": 5}, headers=h)
                    statuses.append(("read", r.status_code, r.headers.get("retry-after")))
                    await asyncio.sleep(0.05)

            async def stream() -> None:
                params = {"type": "load"}
                async with http.stream("GET", "/v1/events/stream", params=params, headers=h) as r:
                    assert r.status_code == 200
                    events = SSEReader(r)
                    while True:
                        streamed.append((await events.next_event(timeout=60))["id"])

            listener = asyncio.create_task(stream())
            load = [asyncio.create_task(writer(n)) for n in range(3)]
            load += [asyncio.create_task(reader()) for _ in range(2)]
            load.append(asyncio.create_task(event_writer()))
            await asyncio.sleep(1.0)
            restarted_at = len(statuses)
            await _restart_postgres(own.data_path / "pg", down_seconds=2.0)
            back_at = len(statuses)
            deadline = time.monotonic() + 20
            # the service must come back by itself: wait for fresh successful writes and reads
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                recent = [(kind, code) for kind, code, _ in statuses[back_at:]]
                if ("write", 201) in recent and recent.count(("read", 200)) >= 3:
                    break
            stop.set()
            await asyncio.gather(*load)
            # the stream opened before the outage delivers every acknowledged event, once
            deadline = time.monotonic() + 15
            while set(acknowledged_events) - set(streamed) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

            codes = {c for _, c, _ in statuses}
            assert codes <= {200, 201, 503}, codes  # never a 500
            during = statuses[restarted_at:back_at]
            assert any(c == 503 for k, c, _ in during if k == "write"), during
            assert all(ra is not None for _, c, ra in statuses if c == 503)
            after = statuses[back_at:]
            assert any(k == "write" and c == 201 for k, c, _ in after), after[-20:]
            assert any(k == "read" and c == 200 for k, c, _ in after), after[-20:]
            # events written after the restart reached the stream opened before it
            assert any(k == "event" and c == 201 for k, c, _ in after), after[-20:]
            assert set(acknowledged_events) <= set(streamed)
            assert len(streamed) == len(set(streamed))
            # nothing acknowledged is lost
            for memory_id in acknowledged:
                got = await http.get(f"/v1/memories/{memory_id}", headers=h)
                assert got.status_code == 200, (memory_id, got.text)
            assert (await http.get("/ready")).status_code == 200
            # an outage is waited out by each background loop, never counted as its failure
            failures = re.findall(
                r"memory_background_failures_total\{loop=\"([^\"]+)\"\} ([0-9.]+)",
                (await http.get("/metrics")).text,
            )
            assert ("event-writer", "0.0") in failures
            assert all(count == "0.0" for _, count in failures), failures
            # the LISTEN connection behind live streams reconnected by itself
            deadline = time.monotonic() + 10
            while "memory_event_fanout_connected 1.0" not in (await http.get("/metrics")).text:
                assert time.monotonic() < deadline, "event fan-out did not reconnect"
                await asyncio.sleep(0.2)
    finally:
        db.stop_embedded(own)
