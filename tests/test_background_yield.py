"""Background index work yields to requests: low-priority threads, pauses, right answers.

FAISS rebuilds and scope graphs are built on threads that lower their own scheduling
priority, in chunks that wait for a moment without a request in flight (never longer
than the pause allows); pgvector's catch-up runs in a database session whose server
process is lowered the same way. Everything here is real: the threads, the kernel's
priorities, FAISS, PostgreSQL, the HTTP app.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.infra import db
from memory_service.infra.foreground import BackgroundThreads, Foreground
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from memory_service.search import rebuild, scoped
from memory_service.search.tenant import TenantIndex
from tests.conftest import new_tenant
from tests.helpers import eventually
from tests.test_hot_search import clustered

linux_only = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is Linux")


def _source(n: int) -> FaissIndex:
    index = FaissIndex(384, FaissParams(hnsw_m=8, ef_construction=40), hnsw=True)
    index.add(np.arange(n), clustered(n, seed=7))
    return index


def _nice_here() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
async def test_background_threads_run_at_low_priority_and_requests_do_not() -> None:
    background = BackgroundThreads(Foreground(), nice=19)
    before = _nice_here()
    try:
        assert await background.run(_nice_here) == 19
        assert _nice_here() == before  # the caller's thread keeps its priority
    finally:
        background.close()


async def test_a_build_waits_while_a_request_is_in_flight_and_resumes_after() -> None:
    foreground = Foreground(max_pause_s=30.0)  # far longer than the test: only leave() frees it
    background = BackgroundThreads(foreground, nice=0)
    source = _source(1200)
    held: scoped.ScopeIndexes = {}
    entry = scoped.register(held, ("user_id", "u1"), source.params, 384)
    members = list(range(0, 1200, 2))
    try:
        foreground.enter()
        build = asyncio.create_task(scoped.build(held, entry, source, members, background))
        await asyncio.sleep(0.4)
        # the first chunk is waiting for the request: nothing copied yet
        assert background.steps == 1 and entry.index.size == 0 and not entry.ready
        assert background.backlog == len(members)
        foreground.leave()
        await asyncio.wait_for(build, 30)
        assert entry.ready and entry.index.size == len(members)
        assert background.backlog == 0 and foreground.pauses == 1
    finally:
        background.close()


async def test_a_steady_stream_of_requests_slows_a_build_but_never_stops_it() -> None:
    foreground = Foreground(max_pause_s=0.02)
    background = BackgroundThreads(foreground, nice=0)
    source = _source(1500)
    held: scoped.ScopeIndexes = {}
    entry = scoped.register(held, ("user_id", "u0"), source.params, 384)
    try:
        foreground.enter()  # in flight the whole time
        await asyncio.wait_for(scoped.build(held, entry, source, list(range(1500)), background), 30)
        chunks = -(-1500 // scoped.BUILD_CHUNK)
        assert entry.ready and entry.index.size == 1500
        assert foreground.pauses == chunks and foreground.paused_s >= 0.02 * chunks * 0.9
    finally:
        foreground.leave()
        background.close()


async def test_a_closing_pool_stops_a_job_at_its_next_step() -> None:
    foreground = Foreground(max_pause_s=30.0)
    background = BackgroundThreads(foreground, nice=0)
    source = _source(1200)
    held: scoped.ScopeIndexes = {}
    entry = scoped.register(held, ("user_id", "u1"), source.params, 384)
    foreground.enter()
    build = asyncio.create_task(scoped.build(held, entry, source, list(range(1200)), background))
    await asyncio.sleep(0.2)
    background.close()
    foreground.leave()  # wakes the waiting step, which finds the pool closing
    with pytest.raises(Exception, match="closing"):
        await asyncio.wait_for(build, 30)
    assert not entry.ready and ("user_id", "u1") not in held


async def test_compacting_a_graph_runs_on_the_background_threads_in_steps() -> None:
    background = BackgroundThreads(Foreground(), nice=0)
    t = TenantIndex(uuid.uuid4())
    t.index = _source(3000)
    t.index.remove(np.arange(0, 3000, 2))  # 1500 tombstones
    assert t.index.needs_rebuild
    t.rebuilding = True
    try:
        await rebuild.rebuild(t, replace(t.index.params, flat_max=500), background)
        assert t.index.size == 1500 and t.index.dead == 0 and t.index.is_hnsw
        assert background.steps >= 1500 // rebuild.CHUNK and background.native_ids
        assert not t.rebuilding and background.backlog == 0
    finally:
        background.close()


@linux_only
async def test_scope_graphs_and_rebuilds_of_a_runtime_run_behind_requests_and_stay_exact(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path, client: Any
) -> None:
    runtime = await Runtime.start(
        settings.with_(
            database_url=database_url,
            data_dir=str(tmp_path),
            faiss_flat_max=500,
            faiss_scope_index_min_rows=200,
        ),
        embedder=hash_embedder,
    )
    try:
        hot = runtime.hot_search
        assert hot is not None
        tid = uuid.UUID((await new_tenant(client))["id"])
        n = 1200
        vecs = clustered(n, seed=41)
        # 400 rows load flat, 800 more outgrow it: the tenant's index is rebuilt as HNSW
        for start, end in ((0, 400), (400, n)):
            await runtime.memories.add_many(
                tid,
                [
                    NewMemory(
                        f"row {i}",
                        Scope(user_id=f"u{i % 2}", namespace="all"),
                        embedding=vecs[i].tolist(),
                    )
                    for i in range(start, end)
                ],
            )
        t = hot.indexes.ready(tid)
        assert t is not None
        background = hot.indexes.background
        queries = clustered(8, seed=42)

        async def search(q: np.ndarray) -> list[int]:
            request = SearchRequest(embedding=q.tolist(), k=10, scope=Scope(user_id="u1"))
            result = await runtime.search.search(tid, request)
            return [int(hit.memory.content.split()[1]) for hit in result.results]

        # while the tenant grows into HNSW and u1 gets a graph, every answer stays exact
        allowed = np.arange(1, n, 2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for q in queries:
                want = allowed[np.argsort(-(vecs[allowed] @ q))[:10]].tolist()
                got = await search(q)
                assert len(set(got) & set(want)) >= 9 and all(i % 2 == 1 for i in got)
            entry = t.scoped.get(("user_id", "u1"))
            if entry is not None and entry.ready and not t.rebuilding:
                break
            await asyncio.sleep(0.05)

        # a scope that holds every row is served by the tenant's graph: no copy of it
        request = SearchRequest(embedding=queries[0].tolist(), k=10, scope=Scope(namespace="all"))
        everyone = await runtime.search.search(tid, request)
        assert len(everyone.results) == 10 and everyone.strategy == "faiss"
        assert ("namespace", "all") not in t.scoped

        async def settled() -> bool:
            return hot.status()["backlog"] == 0

        await eventually(settled, "the FAISS backlog", deadline=30)
        assert t.index is not None and t.index.is_hnsw  # grown at the requests' priority
        assert background.native_ids and background.steps > 0  # the scope graph's steps
        for native_id in background.native_ids:
            assert os.getpriority(os.PRIO_PROCESS, native_id) == settings.background_nice > 0
    finally:
        await runtime.close()


@linux_only
async def test_the_background_session_of_the_embedded_database_runs_at_low_priority(
    settings: Settings, database_url: str
) -> None:
    pool = db.open_background_pool(database_url, settings.with_(background_nice=15))
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
            cur = await conn.execute("SELECT current_setting('application_name')")
            assert (await cur.fetchone()) == ("memory-service-background",)
        assert os.getpriority(os.PRIO_PROCESS, pid) == 15
    finally:
        await pool.close()


async def test_metrics_show_the_requests_in_flight_and_the_pauses_of_background_work(
    client: Any,
) -> None:
    scrape = await client.get("/metrics")
    assert "memory_requests_in_flight 1.0" in scrape.text  # the scrape itself
    assert "memory_background_pause_seconds_total" in scrape.text
    again = await client.get("/metrics")
    assert "memory_requests_in_flight 1.0" in again.text  # the first one has left
