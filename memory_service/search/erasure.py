"""Purge in the in-process indexes: wiping erased memories from memory and from disk.

A plain delete only hides a memory from the held indexes: FAISS keeps its vector
at a dead position (a graph still routes through it) until a rebuild compacts
it away, tantivy keeps its words until it merges the segment, and snapshots
written meanwhile keep the vector on disk. A purge (``memories.erasure``) asks
for more, in every process: ``erase`` overwrites the memories' vectors with
zeros wherever the tenant's indexes hold them (live and dead positions, scope
graphs included), makes the keyword index afresh without them, and deletes the
tenant's snapshots, which the next snapshot replaces. The purging process calls it
before its request answers; every other process calls it when its change-log
follower reads the purge (see ``search.store.mark_purged``). A tenant still
loading may be reading vectors from before the purge, so it is let go and loads
again when next asked for; so is a held one that could not be wiped (the purge has
committed, and the request still answers). ``drop_purged_snapshots`` runs at
start: a snapshot older than a purge of its tenant (or than the pruned log, which
may have held one) is deleted, whether or not the tenant is ever held again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection

import anyio.to_thread
import numpy as np
from psycopg_pool import AsyncConnectionPool

from memory_service.infra.db import wrap_db_errors
from memory_service.search import snapshots, store, tenant
from memory_service.search.indexes import TenantIndexes
from memory_service.search.tenant import TenantIndex

log = logging.getLogger(__name__)


async def erase(indexes: TenantIndexes, tenant_id: uuid.UUID, seqs: Collection[int]) -> None:
    """Wipe these memory seqs from the tenant's held indexes and delete its snapshots."""
    t = indexes.get(tenant_id)
    if t is not None and not t.ready:
        indexes.evict(tenant_id, "was loading during a purge; it loads again when asked for")
        t = None
    if t is None:
        await _erase_snapshots(indexes, tenant_id)
        return
    async with t.lock:
        fresh = set(seqs) - t.erased
        if fresh:
            try:
                await _wipe(t, fresh)
            except Exception:
                # the purge has committed: never serve or snapshot what could not be wiped
                log.exception("could not wipe purged memories of tenant %s", tenant_id)
                t.index = None
                indexes.evict(tenant_id, "was let go: it loads again without the purged rows")
        await _erase_snapshots(indexes, tenant_id)


async def _wipe(t: TenantIndex, seqs: set[int]) -> None:
    """Under the tenant's lock."""
    tenant.drop_rows(t, seqs)
    t.deleted.update(dict.fromkeys(seqs, time.monotonic()))
    for seq in seqs:
        t.versions.pop(seq, None)
    wanted = np.asarray(sorted(seqs), dtype=np.int64)
    held = [t.index, *(s.index for s in t.scoped.values())]
    rows = list(t.rows.values())

    def blocking() -> None:
        for index in held:
            if index is not None:
                index.erase(wanted)
        tenant.rebuild_text(t, rows)

    await anyio.to_thread.run_sync(blocking)
    if t.rebuilding:  # the compacted copy under way may have copied them: wiped after
        t.erase_after_rebuild |= seqs
    t.erased |= seqs
    t.dirty = True  # the next snapshot is written without them


async def _erase_snapshots(indexes: TenantIndexes, tenant_id: uuid.UUID) -> None:
    await anyio.to_thread.run_sync(snapshots.erase, indexes.root, tenant_id)


async def drop_purged_snapshots(indexes: TenantIndexes, pool: AsyncConnectionPool) -> int:
    """Delete every snapshot on disk that a purge of its tenant came after; returns how
    many tenants' snapshots went."""
    marks = await anyio.to_thread.run_sync(snapshots.marks, indexes.root)
    if not marks:
        return 0
    dropped = 0
    async with wrap_db_errors(), pool.connection() as conn:
        cut = await store.pruned_through(conn)
        for tenant_id, mark in marks.items():
            if mark < cut or await store.purged_after(conn, tenant_id, mark):
                await _erase_snapshots(indexes, tenant_id)
                dropped += 1
    return dropped
