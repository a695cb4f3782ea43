"""The per-tenant FAISS indexes a process holds: loading, applying changes, snapshots.

One ``FaissIndex`` per tenant, so a search can never see another tenant's rows.
A tenant is *admitted* when it first writes or searches and the memory budget
allows it (least recently used tenants make room); the rest are served by
pgvector. Loading prefers the newest snapshot under ``data_path/faiss`` plus the
change log since it, and otherwise streams the tenant's vectors from
PostgreSQL. Every change is applied as "this row now looks like the database
says", so replaying one twice is harmless; changes that arrive while a tenant is
loading are queued and replayed before it turns ready. Mutations of one tenant
are serialised by an asyncio lock so they land in arrival order; the FAISS work
itself runs in worker threads: a request's on the shared ones, and what no request
waits for (``rebuild``, scope graphs) on low-priority ``background`` threads in chunks
that let the requests in flight go first (see ``infra.foreground``). Beside each FAISS index a tenant holds a keyword
index (BM25 over the same rows' text) that every load and change reaches too,
when the keyword settings are the ones it implements (the 'english'
configuration, k1 = 1.2, b = 0.75); otherwise keyword search stays in SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import anyio.to_thread
import numpy as np
from psycopg_pool import AsyncConnectionPool

from indexers import keyword_index
from indexers.faiss_index import LABEL_ENTRY_BYTES, FaissIndex, FaissParams
from indexers.keyword_index import KeywordIndex
from indexers.omp import limit_threads
from memory_service.config import Settings
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.foreground import BackgroundThreads, Foreground
from memory_service.infra.replicas import primary_reads, standby_reads
from memory_service.infra.supervisor import Supervisor
from memory_service.memories import repository as repo
from memory_service.memories.models import Memory
from memory_service.memories.rows import VectorRows
from memory_service.search import budget, rebuild, scoped, snapshots, store, tenant
from memory_service.search.budget import MemoryBudget
from memory_service.search.tenant import TenantIndex

log = logging.getLogger(__name__)

REFUSAL_MEMORY_S = 30.0  # how long a tenant refused by the budget stays refused
DELETED_MEMORY_S = 600.0


def faiss_params(settings: Settings) -> FaissParams:
    return FaissParams(
        hnsw_m=settings.faiss_hnsw_m,
        ef_construction=settings.faiss_ef_construction,
        ef_search=settings.faiss_ef_search,
        flat_max=settings.faiss_flat_max,
        exact_max=settings.faiss_exact_max,
    )


class TenantIndexes:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        dimension: int,
        supervisor: Supervisor,
        foreground: Foreground | None = None,  # the requests that background work yields to
    ) -> None:
        self.pool = pool
        threads = settings.faiss_background_threads
        self.background = BackgroundThreads(
            foreground or Foreground(settings.background_pause_ms / 1000),
            nice=settings.background_nice,
            setup=lambda: limit_threads(threads),
            name="faiss-background",
        )
        self.supervisor = supervisor
        self.settings = settings
        self.dimension = dimension
        self.params = faiss_params(settings)
        self.root = settings.data_path / "faiss"
        self._tenants: dict[uuid.UUID, TenantIndex] = {}
        self.keywords_hot = (
            settings.keyword_text_search_config == "english"
            and settings.bm25_k1 == keyword_index.K1
            and settings.bm25_b == keyword_index.B
        )
        self.budget = MemoryBudget(
            int(settings.faiss_memory_budget_mb) * 1024 * 1024,
            self._tenants,
            lambda count: self.params.vector_bytes(dimension, hnsw=count > self.params.flat_max),
            keywords_hot=self.keywords_hot,
        )
        self._refused: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.skipped: Counter[str] = Counter()  # rows an index could not hold (see ``tenant``)

    # -- lookup and admission ------------------------------------------------------------
    def ready(self, tenant_id: uuid.UUID) -> TenantIndex | None:
        t = self._tenants.get(tenant_id)
        if t is None or not t.ready:
            return None
        t.last_used = time.monotonic()
        return t

    def ready_tenants(self) -> list[uuid.UUID]:
        return [t.tenant_id for t in self._tenants.values() if t.ready]

    def held(self) -> list[TenantIndex]:
        return list(self._tenants.values())

    def get(self, tenant_id: uuid.UUID) -> TenantIndex | None:
        """The tenant's entry, ready or still loading."""
        return self._tenants.get(tenant_id)

    def forget_old_deletions(self) -> None:
        cutoff = time.monotonic() - DELETED_MEMORY_S
        for t in self.held():
            t.deleted = {seq: at for seq, at in t.deleted.items() if at > cutoff}

    async def admit(
        self, tenant_id: uuid.UUID, *, wait: bool = False, evict: bool = True
    ) -> TenantIndex | None:
        """Hold this tenant if the budget allows; ready at once when small or ``wait``.

        With ``evict`` the least recently used tenants make room; without, a tenant
        that does not fit the remaining budget is simply left to pgvector.
        """
        t = self._tenants.get(tenant_id)
        if t is not None:
            return t if t.ready else None
        refused_at = self._refused.get(tenant_id)
        if refused_at is not None and time.monotonic() - refused_at < REFUSAL_MEMORY_S:
            return None
        async with wrap_db_errors(), self.pool.connection() as conn:
            count = await repo.tenant_size(conn, tenant_id)
        if tenant_id in self._tenants:  # admitted by someone else meanwhile
            return self.ready(tenant_id)
        need = self.budget.bytes_for(count)
        victims = self.budget.room_for(need, keep=tenant_id) if evict else []
        if victims is None or (not evict and not self.budget.fits(need)):
            self._refused[tenant_id] = time.monotonic()
            log.info("tenant %s (%d vectors) does not fit the FAISS budget", tenant_id, count)
            return None
        for victim in victims:
            self.evict(victim.tenant_id)
        t = TenantIndex(tenant_id, keywords=self._keyword_index(), skipped=self.skipped)
        t.reserved = need  # concurrent admissions see the room as taken while this loads
        self._tenants[tenant_id] = t
        if wait or count <= self.settings.faiss_inline_load_max:
            await self._load(t)
            return t if t.ready and self._tenants.get(tenant_id) is t else None
        self.spawn("faiss-load", self._load(t))
        return None

    def _keyword_index(self) -> KeywordIndex | None:
        if not self.keywords_hot:
            return None
        return KeywordIndex(self.settings.keyword_simple_weight)

    def _let_go(self, victims: list[TenantIndex]) -> None:
        for victim in victims:
            self.evict(victim.tenant_id, "outgrew the FAISS budget; pgvector serves it")

    def evict(
        self, tenant_id: uuid.UUID, why: str = "left the FAISS budget; pgvector serves it"
    ) -> None:
        if self._tenants.pop(tenant_id, None) is not None:
            log.info("tenant %s %s", tenant_id, why)

    # -- loading ---------------------------------------------------------------------------
    async def _load(self, t: TenantIndex) -> None:
        try:
            with standby_reads():  # the bulk read; it and its mark come from one node
                since = await self._load_snapshot(t)
                if since is None:
                    since = await self._build_from_database(t)
            with primary_reads():  # what happened since, from the node that has all of it
                async with wrap_db_errors(), self.pool.connection() as conn:
                    changed = await store.tenant_changes_after(conn, t.tenant_id, since)
            while True:
                changed |= t.pending
                t.pending = set()
                if not changed:
                    break
                await self.refresh(t, changed, force=True)
                changed = set()
            t.ready, t.reserved, t.last_used = True, 0, time.monotonic()
            self._let_go(self.budget.over())  # the reservation was an estimate: others go first
            log.info(
                "FAISS index of tenant %s ready: %d vectors (%s)",
                t.tenant_id,
                t.index.size if t.index else 0,
                t.loaded_from,
            )
        except BaseException:
            if self._tenants.get(t.tenant_id) is t:  # not one loading again since
                del self._tenants[t.tenant_id]
            raise

    async def _load_snapshot(self, t: TenantIndex) -> int | None:
        loaded = await anyio.to_thread.run_sync(
            snapshots.read, self.root, t.tenant_id, self.dimension, self.params
        )
        if loaded is None:
            return None
        index, mark = loaded
        async with wrap_db_errors(), self.pool.connection() as conn:
            cut = await store.pruned_through(conn)
            purged = await store.purged_after(conn, t.tenant_id, mark)
        if mark < cut or purged:  # too old to catch up from, or may hold erased vectors
            why = "a purge" if purged else "the pruned change log"
            log.info("snapshot of tenant %s predates %s; building anew", t.tenant_id, why)
            if purged:
                await anyio.to_thread.run_sync(snapshots.erase, self.root, t.tenant_id)
            return None
        async with wrap_db_errors(), self.pool.connection() as conn:
            stream = repo.stream_tenant_rows(conn, t.tenant_id, self.dimension, vectors=False)
            async with conn.transaction(), contextlib.aclosing(stream) as batches:
                async for rows in batches:
                    tenant.hold_rows(t, rows.memories)
                    await anyio.to_thread.run_sync(tenant.index_text, t, rows.memories, set())
        t.index, t.loaded_from = index, f"snapshot at change {mark}"
        return mark

    async def _build_from_database(self, t: TenantIndex) -> int:
        async with wrap_db_errors(), self.pool.connection() as conn:
            since = await store.last_change(conn)
            count = await repo.tenant_size(conn, t.tenant_id)
            index = FaissIndex(self.dimension, self.params, hnsw=count > self.params.flat_max)
            # aclosing: a cancelled build must close its server-side cursor now, inside the
            # transaction, not whenever the generator happens to be garbage-collected
            stream = repo.stream_tenant_rows(conn, t.tenant_id, self.dimension)
            async with conn.transaction(), contextlib.aclosing(stream) as batches:
                async for rows in batches:
                    await anyio.to_thread.run_sync(index.add, rows.seqs, rows.vectors)
                    tenant.remember_versions(t, rows)
                    tenant.hold_rows(t, rows.memories)
                    await anyio.to_thread.run_sync(tenant.index_text, t, rows.memories, set())
        t.index, t.dirty, t.loaded_from = index, True, "database"
        return since

    # -- applying changes ------------------------------------------------------------------
    async def refresh(self, t: TenantIndex, seqs: set[int], *, force: bool = False) -> None:
        """Make ``seqs`` look as the database has them now (the change-log path)."""
        if not t.ready and not force:
            t.pending |= seqs
            return
        with primary_reads():  # a standby's older version must never replace a newer one
            await self._refresh(t, seqs)

    async def _refresh(self, t: TenantIndex, seqs: set[int]) -> None:
        async with wrap_db_errors(), self.pool.connection() as conn:
            versions = await repo.current_versions(conn, t.tenant_id, sorted(seqs))
        await tenant.settled(t)  # a write of this process may be landing these very rows
        stale = tenant.stale(t, versions)
        rows = tenant.no_rows(self.dimension)
        if stale:
            async with wrap_db_errors(), self.pool.connection() as conn:
                rows = await repo.current_rows(conn, t.tenant_id, stale, self.dimension)
        gone = seqs - versions.keys()
        if len(rows) or gone:
            await self.apply(t, rows, gone)

    async def apply_written(self, tenant_id: uuid.UUID, memories: list[Memory]) -> None:
        """Rows this process has just committed (the read-your-writes path)."""
        t = self._tenants.get(tenant_id)
        if t is None:
            await self.admit(tenant_id)  # a new tenant loads with these rows included
            return
        with_vectors = [m for m in memories if m.embedding is not None]
        if not t.ready or len(with_vectors) != len(memories):
            await self.refresh(t, {m.seq for m in memories})
            return
        rows = VectorRows(
            np.asarray([m.seq for m in memories], dtype=np.int64),
            np.asarray([m.version for m in memories], dtype=np.int64),
            np.stack([np.asarray(m.embedding, dtype=np.float32) for m in with_vectors]),
            [replace(m, embedding=None) for m in memories],
        )
        await self.apply(t, rows, set())

    async def apply_deleted(self, tenant_id: uuid.UUID, memory_ids: list[str]) -> None:
        """Rows this process has just deleted: gone from its answers before the call returns."""
        t = self._tenants.get(tenant_id)
        if t is None:
            return
        gone = {t.seq_of[i] for i in memory_ids if i in t.seq_of}
        if gone:
            await self.apply(t, tenant.no_rows(self.dimension), gone)

    async def sync(self, t: TenantIndex, after_change: int) -> None:
        """Apply every change of the tenant after log position ``after_change`` now (one
        statement): what ``"consistency": "strong"`` asks for before it searches."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows, gone = await repo.changed_rows(conn, t.tenant_id, after_change, self.dimension)
        if len(rows) or gone:
            await self.apply(t, rows, gone)

    async def apply(self, t: TenantIndex, rows: VectorRows, gone: set[int]) -> None:
        async with t.lock:
            index = t.index
            if index is None:
                return
            keep = [
                i
                for i, (seq, version) in enumerate(
                    zip(rows.seqs.tolist(), rows.versions.tolist(), strict=True)
                )
                if seq not in t.deleted and t.versions.get(seq, 1) <= version
            ]
            ids, vectors = rows.seqs[keep], rows.vectors[keep]
            kept = VectorRows(ids, rows.versions[keep], vectors, [rows.memories[i] for i in keep])
            before = budget.bytes_of(t)
            tenant.remember_versions(t, kept)
            # rows change before the vectors: a vector without its row is never shown
            tenant.hold_rows(t, kept.memories)
            tenant.drop_rows(t, gone)
            removed = np.asarray(sorted(gone), dtype=np.int64)
            now = time.monotonic()
            t.deleted.update(dict.fromkeys(gone, now))
            for seq in gone:
                t.versions.pop(seq, None)
            in_scopes = scoped.changes(t.scoped, ids, vectors, kept.memories, gone)

            def mutate() -> None:
                tenant.mutate(index, ids, vectors, removed)
                scoped.apply(in_scopes)

            await anyio.to_thread.run_sync(mutate)
            await anyio.to_thread.run_sync(tenant.index_text, t, kept.memories, gone)
            for change in in_scopes:
                if change.scoped.index.needs_rebuild:  # built again, compact, when asked for
                    t.scoped.pop(change.scoped.key, None)
            if t.rebuild_log is not None:
                t.rebuild_log.append((ids, vectors, removed))
            t.dirty = True
            self._let_go(self.budget.grew(budget.bytes_of(t) - before))
            if index.needs_rebuild and not t.rebuilding:
                t.rebuilding = True
                self.spawn("faiss-rebuild", rebuild.rebuild(t, self.params, self.background))

    def build_scope_index(self, t: TenantIndex, key: scoped.ScopeKey, rows: int) -> None:
        """Give a large, searched scope a graph of its own, in the background, if the
        memory budget allows."""
        per_row = self.params.vector_bytes(self.dimension, hnsw=True) + LABEL_ENTRY_BYTES
        if key in t.scoped or t.index is None or not self.budget.fits(rows * per_row):
            return
        entry = scoped.register(t.scoped, key, self.params, self.dimension)
        # registered first, then the members read: a change after this line reaches
        # the new index itself and marks its rows as touched
        members = list(t.postings.scope_members(*key))
        job = scoped.build(t.scoped, entry, t.index, members, self.background)
        self.spawn("faiss-scope-graph", job)

    # -- snapshots -------------------------------------------------------------------------
    async def snapshot_all(self, mark: int) -> int:
        """Write a snapshot of every changed tenant; ``mark``: every change up to it is in."""
        written = 0
        for t in list(self._tenants.values()):
            if t.ready and t.dirty and not t.rebuilding:
                async with t.lock:
                    if t.index is not None:
                        t.dirty = False
                        await anyio.to_thread.run_sync(
                            snapshots.write, self.root, t.tenant_id, t.index, mark, self.dimension
                        )
                        written += 1
        return written

    # -- lifecycle -------------------------------------------------------------------------
    def spawn(self, group: str, job: Coroutine[Any, Any, None]) -> None:
        """A background job, logged and counted under ``group`` if it fails."""
        task = self.supervisor.run_job(group, job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.background.close()  # a job running stops at its next step
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
