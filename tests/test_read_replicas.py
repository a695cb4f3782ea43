"""Read replicas and failover against a real primary and a real streaming standby.

Both are made here with the embedded PostgreSQL's own binaries (``tests/pg_cluster``).
The service's primary URL names both hosts with ``target_session_attrs=read-write``,
so a promoted standby is found without a restart. The test prints what it measured:
the write rate and the standby's replay lag under it, and the failover timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import psycopg
import pytest
import uvicorn
from litestar import Litestar

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.infra.replicas import SERVED_BY_HEADER, TOKEN_HEADER, parse_token
from tests.conftest import ADMIN_TOKEN, SECRETS_KEY
from tests.helpers import until
from tests.live_http import SSEReader
from tests.pg_cluster import Cluster

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DIM = 384
LOAD_SECONDS = 4.0
BATCH = 250


def vector(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    v[(i * 7 + 1) % DIM] = 0.5
    return v


def marked(i: int) -> list[float]:
    """A direction no load vector has (those are non-negative)."""
    v = [0.0] * DIM
    v[i] = 1.0
    v[i + 1] = -1.0
    return v


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    pair = Cluster().start()
    try:
        yield pair
    finally:
        pair.close()


@contextlib.asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Litestar]]:
    app = create_app(settings, embedder=HashEmbedder(DIM))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http, app
    finally:
        server.should_exit = True
        await task


async def replay_lag(standby_url: str, tokens: asyncio.Queue[tuple[float, int] | None]) -> list[float]:
    """Seconds from each write's answer until the standby has replayed its token."""
    lags: list[float] = []
    async with await psycopg.AsyncConnection.connect(standby_url, autocommit=True) as conn:
        while (item := await tokens.get()) is not None:
            answered, token = item
            while True:
                cur = await conn.execute("SELECT pg_last_wal_replay_lsn()::text")
                row = await cur.fetchone()
                if row and parse_token(row[0]) >= token:
                    break
                await asyncio.sleep(0.001)
            lags.append(time.monotonic() - answered)
    return lags


async def write_load(http: httpx.AsyncClient, headers: dict[str, str], standby_url: str) -> dict[str, float]:
    tokens: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    lag_task = asyncio.create_task(replay_lag(standby_url, tokens))
    written = 0
    started = time.monotonic()

    async def writer(offset: int) -> None:
        nonlocal written
        n = offset
        while time.monotonic() - started < LOAD_SECONDS:
            items = [
                {"content": f"load {n + j}", "embedding": vector(n + j), "metadata": {"w": offset}}
                for j in range(BATCH)
            ]
            n += BATCH * 2
            response = await http.post("/v1/memories/batch", json={"items": items}, headers=headers)
            assert response.status_code == 201, response.text
            written += BATCH
            await tokens.put((time.monotonic(), parse_token(response.headers[TOKEN_HEADER])))

    await asyncio.gather(writer(0), writer(BATCH))
    elapsed = time.monotonic() - started
    await tokens.put(None)
    lags = sorted(await lag_task)
    return {
        "rows_per_s": written / elapsed,
        "lag_p50_ms": statistics.median(lags) * 1000,
        "lag_p95_ms": lags[max(0, int(len(lags) * 0.95) - 1)] * 1000,
        "batches": len(lags),
    }


async def test_replicas_read_your_writes_and_failover(cluster: Cluster, tmp_path: Path) -> None:
    p, s = cluster.primary, cluster.standby
    primary_url = (
        f"postgresql://postgres@127.0.0.1:{p.port},127.0.0.1:{s.port}/postgres"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    settings = Settings(
        data_dir=str(tmp_path),
        database_url=primary_url,
        database_replica_urls=s.url,
        admin_token=ADMIN_TOKEN,
        secrets_key=SECRETS_KEY,
        db_pool_max=8,
        db_pool_timeout_seconds=2.0,
        breaker_reset_seconds=1.0,
        replica_check_interval_s=0.2,
        replica_wait_ms=1000.0,
        replica_max_lag_s=2.0,
        workflow_poll_interval_s=0.5,
        sse_heartbeat_seconds=0.5,
    )
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    async with (
        service(settings) as (http, app),
        service(settings.with_(data_dir=str(other_dir))) as (other, _),
    ):
        runtime = app.state.runtime
        created = await http.post("/v1/admin/tenants", json={"name": "replicas"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        tenant = created.json()
        tid = uuid.UUID(tenant["id"])
        h = {"Authorization": f"Bearer {tenant['api_key']}"}

        # read-your-writes through the standby: the token makes it wait for the write
        added = await http.post(
            "/v1/memories", json={"content": "first", "embedding": marked(1)}, headers=h
        )
        assert added.status_code == 201, added.text
        token = added.headers[TOKEN_HEADER]
        memory_id = added.json()["id"]
        read = await http.get(f"/v1/memories/{memory_id}", headers={**h, TOKEN_HEADER: token})
        assert read.status_code == 200, read.text
        assert read.headers[SERVED_BY_HEADER] == "standby-1"
        assert runtime.pool.replicas.served["standby-1"] >= 1
        bad = await http.get(f"/v1/memories/{memory_id}", headers={**h, TOKEN_HEADER: "nope"})
        assert bad.status_code == 422 and TOKEN_HEADER in bad.json()["detail"]

        # write load: rows per second and the standby's replay lag behind each answer
        load = await write_load(http, h, s.url)
        print(f"\nload average {os.getloadavg()[0]:.2f}; batch writes of {BATCH} supplied "
              f"embeddings: {load['rows_per_s']:.0f} rows/s over {load['batches']:.0f} batches; "
              f"standby replay lag after the answer p50 {load['lag_p50_ms']:.1f} ms, "
              f"p95 {load['lag_p95_ms']:.1f} ms")

        # a standby that stops: reads fall back to the primary, then return by themselves
        await anyio.to_thread.run_sync(s.stop)

        async def served_by(node: str) -> bool:
            r = await http.get(f"/v1/memories/{memory_id}", headers=h)
            assert r.status_code == 200, r.text
            return r.headers[SERVED_BY_HEADER] == node

        await until(lambda: served_by("primary"), 10, "reads on the primary")
        await anyio.to_thread.run_sync(s.start)
        await until(lambda: served_by("standby-1"), 15, "reads back on the standby")

        # a standby that falls behind: a token it has not replayed is read on the primary
        # after the wait, and past the lag bound it is taken out until it catches up
        await anyio.to_thread.run_sync(s.execute, "SELECT pg_wal_replay_pause()")
        paused = await http.post(
            "/v1/memories", json={"content": "paused", "embedding": marked(9)}, headers=h
        )
        assert paused.status_code == 201
        waited = time.monotonic()
        read = await http.get(
            f"/v1/memories/{paused.json()['id']}",
            headers={**h, TOKEN_HEADER: paused.headers[TOKEN_HEADER]},
        )
        assert read.status_code == 200 and read.headers[SERVED_BY_HEADER] == "primary"
        assert time.monotonic() - waited >= settings.replica_wait_ms / 1000 * 0.9
        await until(lambda: served_by("primary"), 10, "the lagging standby taken out")
        await anyio.to_thread.run_sync(s.execute, "SELECT pg_wal_replay_resume()")
        await until(lambda: served_by("standby-1"), 10, "the standby back once caught up")

        # the tenant is held in process before the primary goes
        search = {"embedding": marked(1), "k": 3, "mode": "vector"}

        async def held() -> bool:
            r = await http.post("/v1/memories/search", json=search, headers=h)
            return r.status_code == 200 and r.json()["strategy"] in ("faiss", "exact")

        await until(held, 20, "the tenant held in FAISS")
        # a live change stream, open across the failover
        streamed: list[str] = []
        stream_open = asyncio.Event()

        async def follow_stream() -> None:
            async with http.stream(
                "GET", "/v1/changes/stream", params={"types": "memories"}, headers=h,
                timeout=httpx.Timeout(60, read=60),
            ) as response:
                assert response.status_code == 200
                reader = SSEReader(response)
                stream_open.set()
                while True:
                    streamed.append((await reader.next_event(timeout=60))["id"])

        stream_task = asyncio.create_task(follow_stream())
        await asyncio.wait_for(stream_open.wait(), 10)
        await asyncio.sleep(0.3)  # the stream has read its starting position
        before = await http.post(
            "/v1/memories", json={"content": "before", "embedding": marked(3)}, headers=h
        )
        assert before.status_code == 201
        await anyio.to_thread.run_sync(cluster.wait_caught_up)

        # the primary dies
        killed = time.monotonic()
        await anyio.to_thread.run_sync(lambda: p.stop("immediate"))
        refused = await http.post(
            "/v1/memories", json={"content": "lost?", "embedding": marked(5)}, headers=h
        )
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["status"] == 503
        found = await http.post("/v1/memories/search", json=search, headers=h)
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["memory"]["id"] == memory_id
        stale_ok = await http.get(f"/v1/memories/{before.json()['id']}", headers=h)
        assert stale_ok.status_code == 200 and stale_ok.headers[SERVED_BY_HEADER] == "standby-1"
        strong = await http.post(
            "/v1/memories/search", json={**search, "consistency": "strong"}, headers=h
        )
        assert strong.status_code == 503, "a strong search must read the primary"

        # the standby is promoted; the same URL finds it, and writes resume
        await anyio.to_thread.run_sync(s.promote)
        promoted = time.monotonic()

        async def accepted() -> httpx.Response | None:
            r = await http.post(
                "/v1/memories", json={"content": "after", "embedding": marked(7)}, headers=h
            )
            assert r.status_code in (201, 503), r.text
            return r if r.status_code == 201 else None

        after = await until(accepted, 30, "a write accepted by the promoted standby")
        resumed = time.monotonic()
        print(f"primary killed -> standby promoted {promoted - killed:.2f} s (by the test); "
              f"promoted -> first accepted write {resumed - promoted:.2f} s; "
              f"kill -> first accepted write {resumed - killed:.2f} s")
        more = [
            await http.post(
                "/v1/memories", json={"content": f"later {i}", "embedding": marked(20 + 2 * i)},
                headers=h,
            )
            for i in range(3)
        ]
        assert all(r.status_code == 201 for r in more)
        # written through the other service: this one's follower (LISTEN and the log)
        # must find it on the new primary
        elsewhere = await other.post(
            "/v1/memories", json={"content": "elsewhere", "embedding": marked(40)}, headers=h
        )
        assert elsewhere.status_code in (201, 503), elsewhere.text
        if elsewhere.status_code == 503:  # its pool may still be finding the new primary
            await asyncio.sleep(1.0)
            elsewhere = await other.post(
                "/v1/memories", json={"content": "elsewhere", "embedding": marked(40)}, headers=h
            )
        assert elsewhere.status_code == 201, elsewhere.text

        async def followed() -> bool:
            r = await http.post(
                "/v1/memories/search", json={**search, "embedding": marked(40)}, headers=h
            )
            hits = r.json()["results"] if r.status_code == 200 else []
            return bool(hits) and hits[0]["memory"]["id"] == elsewhere.json()["id"]

        await until(followed, 15, "the follower to apply a change made by another process")
        more.append(elsewhere)

        # the stream delivered each change after it opened once, in order, across the failover
        async def streamed_all() -> bool:
            return elsewhere.json()["id"] in streamed

        await until(streamed_all, 15, "the change stream to resume on the new primary")
        stream_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream_task
        assert streamed == [before.json()["id"], after.json()["id"], *(r.json()["id"] for r in more)]

        # the change feed across the failover: every write once, in order
        changes: list[dict[str, Any]] = []
        since: str | None = None
        while True:
            params = {"limit": "5000", "types": "memories", **({"since": since} if since else {})}
            page = await http.get("/v1/changes", params=params, headers=h)
            assert page.status_code == 200, page.text
            body = page.json()
            changes += body["items"]
            since = body["next_cursor"]
            if not body["items"]:
                break
        seqs = [runtime.changes.cursors.decode(c["cursor"], "changes", tid) for c in changes]
        assert seqs == sorted(set(seqs)), "a change repeated or out of order"
        ids = [c["id"] for c in changes]
        expected = [memory_id, paused.json()["id"], before.json()["id"], after.json()["id"]]
        expected += [r.json()["id"] for r in more]
        for each in expected:
            assert ids.count(each) == 1, each
        assert ids.index(before.json()["id"]) < ids.index(after.json()["id"])
        assert len(ids) == len(set(ids)) == load["batches"] * BATCH + len(expected)
        jumps = [b - a for a, b in itertools.pairwise(seqs) if b - a != 1]
        print(f"change feed: {len(seqs)} changes, seq {seqs[0]}..{seqs[-1]}, "
              f"jumps across the failover: {jumps}")

        # the in-process index followed the new primary too
        new_hit = await http.post(
            "/v1/memories/search", json={**search, "embedding": marked(7)}, headers=h
        )
        assert new_hit.json()["results"][0]["memory"]["id"] == after.json()["id"]
