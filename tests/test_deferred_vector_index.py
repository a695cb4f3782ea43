"""pgvector's HNSW graph off the write path: batch writes wait in a backlog that the
index worker drains, and searches stay exact-k and correct before, during and after.

The services are built from their parts against the real database; the tenant is
never held by FAISS, so the pgvector path answers. While a test checks a backlog it
holds a row lock on the tenant's rows, so the index worker of any app running in
this session skips them (it takes rows with SKIP LOCKED) and the backlog is real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder, Embedder
from memory_service.infra import db, service_state
from memory_service.infra.migrate import run_migrations
from memory_service.infra.pagination import CursorCodec
from memory_service.infra.supervisor import Supervisor
from memory_service.memories import repository as repo
from memory_service.memories.models import MemoryPatch, NewMemory, SearchRequest
from memory_service.memories.service import MemoryService
from memory_service.memories.validation import MemoryValidator
from memory_service.records.tenants import TenantService
from memory_service.search.index_worker import VectorIndexWorker
from memory_service.search.vector import VectorSearch
from tests.helpers import unit_vectors

N = 1200
K = 10


@dataclass
class Parts:
    pool: AsyncConnectionPool
    memories: MemoryService
    search: VectorSearch
    worker: VectorIndexWorker
    tid: uuid.UUID


@pytest.fixture
async def parts(settings: Settings, database_url: str, hash_embedder: Embedder) -> AsyncIterator[Parts]:
    # below 100 matching rows a search is an exact scan; above it the graph answers,
    # walked wide enough that on this size its answer is the exact one
    tuned = settings.with_(exact_search_threshold=100, pgvector_ef_search=1000)
    run_migrations(database_url, hash_embedder.dimension)
    pool = db.open_pool(database_url, tuned)
    await pool.open(wait=True)
    embedder = CachedEmbedder(hash_embedder)
    validator = MemoryValidator(tuned, embedder.dimension)
    cursors = CursorCodec(await service_state.cursor_key(pool))
    tenant, _ = await TenantService(pool).create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    yield Parts(
        pool,
        MemoryService(pool, embedder, tuned, cursors, validator),
        VectorSearch(pool, tuned, hot=None),
        VectorIndexWorker(
            pool, batch_size=300, idle_interval_s=0.05, backlog_max=0, supervisor=Supervisor()
        ),
        uuid.UUID(tenant.id),
    )
    await pool.close()


async def add_rows(p: Parts, vecs: np.ndarray, start: int, stop: int) -> dict[str, str]:
    """Adds rows ``start`` to ``stop`` as one batch; content -> id."""
    items = [NewMemory(f"row {i}", embedding=vecs[i].tolist()) for i in range(start, stop)]
    added, created = await p.memories.add_many(p.tid, items)
    assert all(created)
    return {m.content: m.id for m in added}


async def unindexed(p: Parts) -> int:
    async with p.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM memories WHERE tenant_id = %s AND NOT indexed", (p.tid,)
        )
        return int((await cur.fetchone() or (0,))[0])


async def drain(p: Parts) -> None:
    """Index the backlog; another worker of this session may hold some rows meanwhile."""
    for _ in range(200):
        await p.worker.drain()
        if await unindexed(p) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the backlog did not drain")


async def search(p: Parts, q: np.ndarray) -> tuple[list[str], str]:
    result = await p.search.in_database(p.tid, SearchRequest("", k=K), None, q)
    return [hit.memory.content for hit in result.results], result.strategy


def reference(vecs: np.ndarray, live: dict[str, int], q: np.ndarray) -> list[str]:
    names = list(live)
    scores = vecs[[live[n] for n in names]] @ q
    return [names[j] for j in np.argsort(-scores)[:K]]


class TenantLock:
    """Row locks on a tenant's rows, so no index worker flips them meanwhile."""

    def __init__(self, p: Parts) -> None:
        self.p = p

    async def __aenter__(self) -> None:
        self.cm = self.p.pool.connection()
        conn = await self.cm.__aenter__()
        await conn.execute("SELECT 1 FROM memories WHERE tenant_id = %s FOR UPDATE", (self.p.tid,))

    async def __aexit__(self, *exc: Any) -> None:
        await self.cm.__aexit__(None, None, None)


async def test_search_is_exact_k_during_and_after_a_load(parts: Parts) -> None:
    p = parts
    vecs = unit_vectors(N, seed=41)
    queries = unit_vectors(4, seed=42)
    live = {f"row {i}": i for i in range(N)}
    await add_rows(p, vecs, 0, N // 2)
    await drain(p)
    await add_rows(p, vecs, N // 2, N)
    async with TenantLock(p):
        # half the tenant in the graph, half in the backlog: both halves are ranked
        assert await unindexed(p) == N // 2
        for q in queries:
            got, strategy = await search(p, q)
            assert strategy == "pgvector"
            assert got == reference(vecs, live, q)
    await drain(p)
    for q in queries:
        got, strategy = await search(p, q)
        assert strategy == "pgvector"
        assert got == reference(vecs, live, q)


async def test_indexing_records_no_change(parts: Parts) -> None:
    p = parts
    vecs = unit_vectors(200, seed=43)
    await add_rows(p, vecs, 0, 200)
    counts = (
        "SELECT (SELECT count(*) FROM memory_history WHERE tenant_id = %(t)s), "
        "(SELECT count(*) FROM memory_versions WHERE tenant_id = %(t)s), "
        "(SELECT count(*) FROM memory_versions WHERE tenant_id = %(t)s AND valid_to IS NULL), "
        "(SELECT count(*) FROM memory_changes WHERE tenant_id = %(t)s), "
        "(SELECT count(*) FROM changes WHERE tenant_id = %(t)s), "
        "(SELECT max(updated_at) FROM memories WHERE tenant_id = %(t)s), "
        "(SELECT sum(version) FROM memories WHERE tenant_id = %(t)s)"
    )
    async with p.pool.connection() as conn:
        before = await (await conn.execute(counts, {"t": p.tid})).fetchone()
    assert await unindexed(p) == 200
    # the worker as the runtime runs it: it waits until the load stops arriving
    worker = VectorIndexWorker(
        p.pool, batch_size=64, idle_interval_s=0.05, backlog_max=10_000, supervisor=Supervisor()
    )
    worker.start()
    try:
        for _ in range(600):
            if await unindexed(p) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    assert await unindexed(p) == 0
    async with p.pool.connection() as conn:
        after = await (await conn.execute(counts, {"t": p.tid})).fetchone()
    assert before is not None and before[0] == 200 and before[4] == 200
    assert after == before


async def test_deleted_and_updated_rows_waiting_for_the_index(parts: Parts) -> None:
    p = parts
    vecs = unit_vectors(300, seed=44)
    live = {f"row {i}": i for i in range(300)}
    ids = await add_rows(p, vecs, 0, 300)
    q = vecs[5]
    # the nearest row goes away; another one moves onto the query
    await p.memories.delete(p.tid, ids["row 5"])
    del live["row 5"]
    moved = await p.memories.update(p.tid, ids["row 9"], MemoryPatch(content="row 9 moved"), None)
    vecs9 = np.asarray(moved.embedding, dtype=np.float32)
    async with TenantLock(p):
        assert await unindexed(p) == 299
        names = [*live]
        table = np.vstack([vecs[[live[n] for n in names if n != "row 9"]], vecs9])
        order = [n for n in names if n != "row 9"] + ["row 9 moved"]
        for query in (q, vecs9):
            got, _ = await search(p, query)
            expected = [order[j] for j in np.argsort(-(table @ query))[:K]]
            assert got == expected
            assert "row 5" not in got
    await drain(p)
    got, _ = await search(p, vecs9)
    assert got[0] == "row 9 moved"


async def test_the_worker_waits_until_a_load_has_been_quiet(parts: Parts) -> None:
    """A pause between two batches (the client encoding the next) is not the end of a load."""
    p = parts
    await add_rows(p, unit_vectors(50, seed=45), 0, 50)
    worker = VectorIndexWorker(
        p.pool, batch_size=64, idle_interval_s=0.05, backlog_max=10_000, quiet_s=0.5,
        supervisor=Supervisor(),
    )
    async with TenantLock(p):
        assert not await worker.should_index()  # rows have just arrived
        assert not await worker.should_index()  # nothing new, but not quiet for 0.5 s yet
        await asyncio.sleep(0.6)
        assert await worker.should_index()
        assert worker.status()["backlog"] >= 50  # what /metrics reports as the backlog
    await drain(p)  # the rows are free again
    assert await worker.round() is None
    assert worker.status()["backlog"] == 0


async def test_the_worker_waits_while_a_batch_is_being_embedded(
    parts: Parts, hash_embedder: Embedder
) -> None:
    """A batch of texts reaches the table only after its embedding: while the service is
    embedding or writing one, the graph's growth would take the cores from the model."""
    p = parts
    await add_rows(p, unit_vectors(50, seed=47), 0, 50)
    embedding, release = asyncio.Event(), asyncio.Event()

    class SlowModel:
        dimension = hash_embedder.dimension
        model_name = hash_embedder.model_name

        def embed(self, texts: list[str]) -> np.ndarray:
            loop.call_soon_threadsafe(embedding.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)
            return hash_embedder.embed(texts)

    loop = asyncio.get_running_loop()
    settings = p.memories.settings
    writer = MemoryService(
        p.pool, CachedEmbedder(SlowModel()), settings, p.memories.cursors, p.memories.validate
    )
    worker = VectorIndexWorker(
        p.pool, batch_size=64, idle_interval_s=0.05, backlog_max=10_000, quiet_s=0.2,
        supervisor=Supervisor(),
        busy=lambda: writer.batches_in_flight > 0,
    )
    async with TenantLock(p):
        assert not await worker.should_index()  # rows have just arrived
        texts = [NewMemory(f"text {i} to embed") for i in range(3)]
        write = asyncio.create_task(writer.add_many(p.tid, texts))
        await asyncio.wait_for(embedding.wait(), 30)
        assert writer.batches_in_flight == 1
        await asyncio.sleep(0.3)  # past the quiet, but a batch is still being embedded
        assert not await worker.should_index()
        release.set()
        await write
        assert writer.batches_in_flight == 0
        assert not await worker.should_index()  # its rows have just arrived
        await asyncio.sleep(0.3)
        assert await worker.should_index()
    await drain(p)


async def test_rows_of_tenants_held_in_faiss_wait_for_the_quiet(parts: Parts) -> None:
    """While a load arrives, only rows of tenants that FAISS does not hold count toward
    the backlog bound: the held tenants' searches never rank that backlog."""
    p = parts
    await add_rows(p, unit_vectors(50, seed=46), 0, 50)
    async with p.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT tenant_id FROM memories WHERE NOT indexed AND tenant_id <> %s",
            (p.tid,),
        )
        others = [row[0] for row in await cur.fetchall()]  # earlier tests' leftovers

    def worker(held: list[uuid.UUID]) -> VectorIndexWorker:
        return VectorIndexWorker(
            p.pool, batch_size=64, idle_interval_s=0.05, backlog_max=20, quiet_s=30,
            supervisor=Supervisor(),
            held=lambda: held,
        )

    async with TenantLock(p):
        assert await worker([*others, p.tid]).round() is None  # arriving, all of it held
        assert await worker(others).round() == others  # past the bound: index, not those
        async with p.pool.connection() as conn:
            cur = await conn.execute("SELECT min(seq) FROM memories WHERE tenant_id = %s", (p.tid,))
            first = (await cur.fetchone() or (0,))[0]
            span = await repo.backlog_span(conn, [p.tid])
        assert span is None or span[1] < first  # the held tenant's rows are left out
