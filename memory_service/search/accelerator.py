"""Hot search: the in-process FAISS path of vector search.

``HotSearch`` holds the tenant indexes and the change-log follower it is given.
``MemoryService`` calls its ``on_change`` after every committed write (so a
write is searchable through FAISS as soon as its request returns) and
``VectorSearch`` asks its ``search`` first, which executes the planner's plan
and answers ``None`` whenever the database should answer instead: the tenant
is not held (budget) or not loaded yet, or the candidates are too many for an
exact pass and too rare for FAISS probing. A background loop writes snapshots, prunes the
change log and keeps the held tenants within the memory budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import numpy as np
from psycopg_pool import AsyncConnectionPool

from indexers.faiss_index import FaissIndex
from memory_service.config import Settings
from memory_service.errors import MemoryServiceError
from memory_service.infra import stages
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop
from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import Memory, Scope, SearchHit, SearchRequest, SearchResult
from memory_service.memories.predicate import RowCheck
from memory_service.search import erasure, planner, scoped, store
from memory_service.search.batching import ProbeBatcher
from memory_service.search.follower import ChangeFollower
from memory_service.search.indexes import TenantIndexes
from memory_service.search.tenant import TenantIndex

log = logging.getLogger(__name__)

MAX_PROBES = 4
# the exact path takes its candidates from the posting lists; without a posted value to
# narrow by, a tenant this small is scanned in process (about 1 ms) and a larger one asks
# PostgreSQL, whose indexes find such a filter's rows faster
SCAN_IN_PROCESS_MAX = 2000
# searches small enough to run on the event loop rather than hop to a thread (see _probe)
INLINE_FETCH_MAX = 100
INLINE_SIZE_MAX = 2000
INLINE_EXACT_MAX = 5000  # candidates an exact pass scores on the event loop
MAX_REMEMBERED_SHAPES = 1024


class HotSearch:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        indexes: TenantIndexes,
        follower: ChangeFollower,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.indexes = indexes
        self.follower = follower
        self.preloaded = asyncio.Event()
        self.batcher = ProbeBatcher()
        self._maintenance: Loop | None = None

    # -- writes ----------------------------------------------------------------------------
    async def on_change(
        self, tenant_id: uuid.UUID, upserted: list[Memory], deleted: list[str]
    ) -> None:
        """Apply a committed write at once. The write stands whatever happens here: if the
        index cannot follow now, the change log brings it up to date on the next poll,
        and until then the SQL re-check keeps every answer true to the database."""
        try:
            if upserted:
                await self.indexes.apply_written(tenant_id, upserted)
            if deleted:
                await self.indexes.apply_deleted(tenant_id, deleted)
        except MemoryServiceError as exc:
            log.warning("FAISS could not apply a write at once (%s); the log will", exc)
            self.follower.wake()

    async def erase(self, tenant_id: uuid.UUID, seqs: Collection[int]) -> None:
        """After a purge's commit: wipe the memories from this process's indexes and
        the tenant's snapshots before the request answers (other processes do when
        their follower reads the purge)."""
        await erasure.erase(self.indexes, tenant_id, seqs)

    # -- search ----------------------------------------------------------------------------
    async def search(
        self,
        tenant_id: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        query: np.ndarray,
    ) -> SearchResult | None:
        t = self.indexes.ready(tenant_id) or await self.indexes.admit(tenant_id)
        if t is None or t.index is None:
            return None
        if request.consistency == "strong":
            await self.indexes.sync(t, self.follower.mark)  # the one extra round trip
        check = RowCheck.build(request.scope, flt)
        k, filtered = request.k, bool(request.scope.given()) or flt is not None
        if filtered and check is not None:
            found = await self._in_scope(t, request, check, query)
            if found is not None:
                return found
        shape = _shape(request) if filtered else ""
        plan = self._first_plan(t, k, filtered, shape)
        for _ in range(MAX_PROBES):
            if plan.path == "exact":
                return await self._exact(t, request, flt, check, query, shape)
            index = t.index
            if plan.path != "faiss" or index is None:
                return None
            ids, scores = await _probe(self.batcher, index, query, plan)
            hits = await self._matching(t, ids, scores, request.scope, flt, check)
            if filtered and len(ids):
                _remember(t, shape, max(len(hits), 0.5) / len(ids))
            if len(hits) >= k or len(ids) < plan.fetch:
                return SearchResult(hits[:k], 0.0, "faiss")
            plan = planner.next_plan(k, index.size, len(ids), len(hits), self.settings)
        return None

    def holds(self, tenant_id: uuid.UUID) -> bool:
        t = self.indexes.ready(tenant_id)
        return t is not None and t.index is not None

    async def vectors_of(
        self, tenant_id: uuid.UUID, seqs: list[int]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The held FAISS vectors of those ``seqs`` the index has, with their seqs (a
        copy: a few hundred rows cost microseconds, so it runs here unless a mutation
        holds the index); None when the tenant is not held."""
        t = self.indexes.ready(tenant_id)
        index = t.index if t is not None else None
        if index is None:
            return None
        found = index.vectors_unless_busy(seqs)
        if found is None:
            found = await anyio.to_thread.run_sync(index.vectors_of, seqs)
        return found

    async def _in_scope(
        self, t: TenantIndex, request: SearchRequest, check: RowCheck, query: np.ndarray
    ) -> SearchResult | None:
        """A search confined to one large scope value, answered from that scope's own
        graph (see ``scoped``); None when it has none yet, or is not in step this moment."""
        key = scoped.scope_key(request)
        least = self.settings.faiss_scope_index_min_rows
        if key is None or least <= 0:
            return None
        inside = t.postings.scope_members(*key)
        entry = t.scoped.get(key)
        if entry is None:
            size = t.index.size if t.index is not None else 0
            if least <= len(inside) <= scoped.OWN_GRAPH_MAX_SHARE * size:
                self.indexes.build_scope_index(t, key, len(inside))
            return None
        if not entry.ready or entry.index.size != len(inside):
            return None
        entry.last_used = time.monotonic()
        fetch = 2 * request.k if t.expiring else request.k  # room for rows that expired
        ef = max(self.settings.faiss_ef_search, fetch)
        plan = planner.Plan("faiss", fetch, ef)
        ids, scores = await _probe(self.batcher, entry.index, query, plan)
        hits = await self._matching(t, ids, scores, request.scope, None, check)
        if len(hits) < min(request.k, len(inside)):
            return None
        return SearchResult(hits[: request.k], 0.0, "faiss")

    def _first_plan(self, t: TenantIndex, k: int, filtered: bool, shape: str) -> planner.Plan:
        size = t.index.size if t.index is not None else 0
        known = t.selectivity.get(shape) if filtered else None
        if known is not None:
            return planner.plan_for_share(k, size, known, self.settings)
        return planner.first_plan(k, size, filtered=filtered, settings=self.settings)

    async def _matching(
        self,
        t: TenantIndex,
        ids: np.ndarray,
        scores: np.ndarray,
        scope: Scope,
        flt: CompiledFilter | None,
        check: RowCheck | None,
    ) -> list[SearchHit]:
        """The ranked ids whose rows match, in rank order: in process when the filter
        can be decided here, else re-checked in SQL."""
        if check is not None:
            now = datetime.now(UTC)
            rows = t.rows
            return [
                SearchHit(row, float(score))
                for seq, score in zip(ids.tolist(), scores.tolist(), strict=True)
                if (row := rows.get(seq)) is not None and check.matches(row, now)
            ]
        async with wrap_db_errors(), self.pool.connection() as conn:
            found = await repo.get_many_by_seq(conn, t.tenant_id, ids.tolist(), scope, flt)
        return _hits(ids, scores, found)

    async def _exact(
        self,
        t: TenantIndex,
        request: SearchRequest,
        flt: CompiledFilter | None,
        check: RowCheck | None,
        query: np.ndarray,
        shape: str,
    ) -> SearchResult | None:
        limit = self.settings.faiss_exact_max
        seqs = _matching_in_process(t, request, check)
        held = seqs is not None  # in process, the seqs are of held rows
        if seqs is None:
            async with wrap_db_errors(), self.pool.connection() as conn:
                seqs = set(
                    await repo.matching_seqs(conn, t.tenant_id, request.scope, flt, limit + 1)
                )
        if t.index is not None and shape:
            _remember(t, shape, len(seqs) / max(1, t.index.size))
        if len(seqs) > limit or t.index is None:
            return None
        missing = t.index.absent(seqs)
        if not held:
            missing.update(s for s in seqs if s not in t.rows)
        if missing:  # written by another process a moment ago: fetch them now
            await self.indexes.refresh(t, missing)
        index = t.index
        if index is None:
            return None
        found = None
        with stages.timed("index"):
            if len(seqs) <= INLINE_EXACT_MAX:  # scoring a few thousand rows costs less than the hop
                found = index.search_unless_busy(query, request.k, allow=seqs)
            if found is None:
                found = await anyio.to_thread.run_sync(
                    lambda: index.search(query, request.k, allow=seqs)
                )
        ids, scores = found
        # the database named these rows a moment ago: only a change since can drop one
        hits = await self._matching(t, ids, scores, request.scope, flt, check)
        if len(hits) < min(request.k, len(seqs)):
            return None  # a concurrent change: the database answers
        return SearchResult(hits, 0.0, "exact")

    # -- lifecycle -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        held = self.indexes.held()
        return {
            "size": sum(t.index.size for t in held if t.index is not None),
            "tenants": len(held),
            "ready_tenants": sum(1 for t in held if t.ready),
            "scope_indexes": sum(1 for t in held for s in t.scoped.values() if s.ready),
            # rows that background builds (rebuilds, scope graphs) have yet to put in
            "backlog": self.indexes.background.backlog,
            "bytes": self.indexes.budget.used(),
            "budget_bytes": self.indexes.budget.budget_bytes,
            "change_mark": self.follower.mark,
            "listening": self.follower.listening,
            "lag_seconds": self.follower.lag_seconds(),
            "rows_skipped": dict(self.indexes.skipped),
            "probes": self.batcher.probes,
            "probe_batches": self.batcher.batches,
        }

    async def preload(self) -> None:
        """Hold the largest tenants that fit the budget (snapshot plus log, or a rebuild).

        Without ``faiss_preload`` (a replica behind a tenant-affine proxy) nothing is
        loaded ahead: each tenant loads where the proxy sends it."""
        try:
            # purged memories' vectors go from disk even where nothing is preloaded
            dropped = await erasure.drop_purged_snapshots(self.indexes, self.pool)
            if dropped:
                log.info("deleted the FAISS snapshots of %d tenants purged since", dropped)
            if not self.settings.faiss_preload:
                return
            async with wrap_db_errors(), self.pool.connection() as conn:
                sizes = await repo.tenant_sizes(conn)
            for tenant_id, _ in sorted(sizes.items(), key=lambda item: -item[1]):
                await self.indexes.admit(tenant_id, wait=True, evict=False)
        finally:
            self.preloaded.set()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.preloaded.wait(), timeout)
        return self.preloaded.is_set()

    def start(self) -> None:
        self.indexes.spawn("faiss-preload", self.preload())
        self._maintenance = self.indexes.supervisor.spawn("faiss-maintenance", self._maintain)

    async def _maintain(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(self.settings.faiss_snapshot_interval_s)
            try:
                await self.indexes.snapshot_all(self.follower.mark)
                self.indexes.forget_old_deletions()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    async with wrap_db_errors(), self.pool.connection() as conn:
                        await store.prune_changes(
                            conn, self.settings.change_log_retention_hours * 3600
                        )
            except (MemoryServiceError, OSError) as exc:
                log.warning("hot search maintenance failed: %s", exc)

    async def close(self) -> None:
        if self._maintenance is not None:
            await self._maintenance.stop()
        await self.follower.stop()
        await self.indexes.close()
        try:
            await self.indexes.snapshot_all(self.follower.mark)
        except (MemoryServiceError, OSError) as exc:
            log.warning("could not write FAISS snapshots on shutdown: %s", exc)


def _matching_in_process(
    t: TenantIndex, request: SearchRequest, check: RowCheck | None
) -> set[int] | None:
    """The seqs of every held row that matches, when the posting lists narrow the rows
    (or the tenant is small enough to scan); None when the database should say. A new
    set: a search in a worker thread may read it while the posting lists change."""
    if check is None:
        return None
    candidates: Any
    candidates, exact = t.postings.narrow(request.scope, request.filter)
    now, rows = datetime.now(UTC), t.rows
    if exact:  # the posting lists decided scope and filter: only expiry is left
        if not t.expiring:
            return set(candidates)
        return {
            s
            for s in candidates
            if s not in t.expiring
            or (
                (row := rows.get(s)) is not None
                and (row.expires_at is None or row.expires_at > now)
            )
        }
    if candidates is None:
        if len(t.rows) > SCAN_IN_PROCESS_MAX:
            return None
        candidates = t.rows.keys()
    return {s for s in candidates if (row := rows.get(s)) is not None and check.matches(row, now)}


async def _probe(
    batcher: ProbeBatcher, index: FaissIndex, query: np.ndarray, plan: planner.Plan
) -> tuple[Any, Any]:
    """Rank ``plan.fetch`` neighbours. A short HNSW walk (or a tiny flat scan) costs about
    what the hop to a worker thread costs, so it runs here while nothing else probes
    the index and no mutation holds it; anything longer, or a busy index, joins the
    index's next batch in a worker thread."""
    quick = (index.is_hnsw and plan.fetch <= INLINE_FETCH_MAX) or index.size <= INLINE_SIZE_MAX
    ef = plan.ef_search or index.params.ef_search
    with stages.timed("index"):
        if quick and not batcher.busy(index):
            found = index.search_unless_busy(query, plan.fetch, ef_search=ef)
            if found is not None:
                return found
        return await batcher.search(index, query, plan.fetch, ef)


def _shape(request: SearchRequest) -> str:
    return json.dumps([request.scope.given(), request.filter], sort_keys=True, default=str)


def _remember(t: TenantIndex, shape: str, share: float) -> None:
    t.selectivity[shape] = share
    t.selectivity.move_to_end(shape)
    if len(t.selectivity) > MAX_REMEMBERED_SHAPES:
        t.selectivity.popitem(last=False)


def _hits(ids: np.ndarray, scores: np.ndarray, rows: dict[int, Memory]) -> list[SearchHit]:
    return [
        SearchHit(rows[i], float(s))
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
        if i in rows
    ]
