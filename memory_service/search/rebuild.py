"""Rebuilding a tenant's FAISS index while searches go on.

HNSW cannot drop a vector, so removals leave tombstones, and a flat index that outgrew
``flat_max`` should become a graph; either way the tenant's index is built anew. The
live vectors are copied under the tenant's lock and the new index is built outside it
while searches keep using the old one. Compacting a graph is work no request waits
for: it runs on the low-priority background threads, in chunks that let the requests
in flight go first (see ``infra.foreground``). Growing a flat index into a graph is
not: until it ends, every search scans the whole flat index, so it runs at the
requests' own priority with every core (held back, it made searches over an outgrown
30,000-row flat index five times slower for minutes). Then the changes
that landed meanwhile (``rebuild_log``) and purges (``erase_after_rebuild``) are then
replayed onto it under the lock, and it takes the old one's place.
"""

from __future__ import annotations

import logging

import anyio.to_thread
import numpy as np

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.infra.foreground import BackgroundThreads
from memory_service.search import tenant
from memory_service.search.tenant import TenantIndex

log = logging.getLogger(__name__)

CHUNK = 1000  # vectors per step of a background build


async def rebuild(t: TenantIndex, params: FaissParams, background: BackgroundThreads) -> None:
    """Compact away tombstones (or grow flat into HNSW) while searches go on."""
    try:
        async with t.lock:
            old = t.index
            if old is None:
                return
            t.rebuild_log = []
            ids, vectors = await anyio.to_thread.run_sync(old.live_items)
        if old.is_hnsw:  # searches go on well enough meanwhile: behind the requests
            fresh = await background.run(
                build_in_steps, old.dimension, ids, vectors, params, background, rows=len(ids)
            )
        else:  # every search scans the outgrown flat index until this ends: at full speed
            with background.counted(len(ids)):
                fresh = await anyio.to_thread.run_sync(
                    lambda: FaissIndex.build(old.dimension, ids, vectors, params)
                )
        async with t.lock:
            for ids_, vectors_, removed in t.rebuild_log or []:
                await anyio.to_thread.run_sync(tenant.mutate, fresh, ids_, vectors_, removed)
            if t.erase_after_rebuild:  # purged after the copy was taken
                wanted = np.asarray(sorted(t.erase_after_rebuild), dtype=np.int64)
                await anyio.to_thread.run_sync(fresh.erase, wanted)
            t.index, t.rebuild_log, t.dirty = fresh, None, True
        log.info("rebuilt FAISS index of tenant %s: %d vectors", t.tenant_id, fresh.size)
    finally:
        t.rebuild_log = None
        t.rebuilding = False
        t.erase_after_rebuild = set()


def build_in_steps(
    dimension: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    params: FaissParams,
    background: BackgroundThreads,
) -> FaissIndex:
    """A fresh index of these vectors, built in steps (blocking: a background thread)."""
    background.step()
    return FaissIndex.build(
        dimension, ids, vectors, params, progress=lambda _: background.step(), chunk=CHUNK
    )
