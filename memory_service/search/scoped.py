"""Scope indexes: a graph of its own for a large scope value that searches ask for.

Agents search inside one scope: one user's, agent's, run's or namespace's memories.
When that scope holds a tenth of a tenant's rows, the tenant's graph serves it badly:
a post-filter probe must walk ten times deeper and check ten times the rows, and a
walk that skips rows outside the scope (an FAISS selector) misses neighbours when
the scope's memories sit in one region of the space and the query in another. So a
search that names exactly one scope value, with no filter, and finds at least
``faiss_scope_index_min_rows`` rows under it (and not nearly all of the tenant's:
``OWN_GRAPH_MAX_SHARE``), has the tenant build that value an HNSW
graph of its own in the background (vectors copied from the tenant's index, the
memory counted in the budget). From the moment it is registered, every change the
tenant's index receives reaches it too (``changes``), so once built it stays exact
about membership; a change that arrives while it is being built wins over the copy
(``touched``). Searches use it only when it holds exactly as many rows as the scope's
posting list and re-check the rows they return, so a moment of disagreement sends
the search down the ordinary path instead of giving a wrong answer. Scope indexes
are not written to snapshots: a restart builds them again when they are asked for.
A build runs on the tenant indexes' low-priority background threads in small chunks,
giving the requests in flight their moment between two (see ``infra.foreground``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.infra.foreground import BackgroundThreads
from memory_service.memories.models import Memory, SearchRequest

log = logging.getLogger(__name__)

ScopeKey = tuple[str, str]  # (scope field, value)
MAX_SCOPE_INDEXES = 32  # per tenant; the least recently searched one makes room
# a scope holding more of the tenant's rows than this gets no graph of its own: the
# tenant's graph, whose probe lets nearly every neighbour through, serves it as well, and
# a copy would cost as much background work and memory as the tenant's graph itself
OWN_GRAPH_MAX_SHARE = 0.9
BUILD_CHUNK = 500  # vectors per step of a build: tens of milliseconds of one core


@dataclass(eq=False)
class ScopeIndex:
    key: ScopeKey
    index: FaissIndex
    ready: bool = False
    touched: set[int] = field(default_factory=set)  # changed while the copy was made
    last_used: float = field(default_factory=time.monotonic)


def scope_key(request: SearchRequest) -> ScopeKey | None:
    """The one scope value a search is confined to, when that is all it asks."""
    if request.filter is not None:
        return None
    given = request.scope.given()
    if len(given) != 1:
        return None
    ((name, value),) = given.items()
    return (name, value) if value else None


ScopeIndexes = dict[ScopeKey, ScopeIndex]


def register(held: ScopeIndexes, key: ScopeKey, params: FaissParams, dimension: int) -> ScopeIndex:
    """A new, empty scope index that every change of the tenant reaches from now on."""
    if len(held) >= MAX_SCOPE_INDEXES:
        oldest = min(held.values(), key=lambda s: s.last_used)
        del held[oldest.key]
    scoped = ScopeIndex(key, FaissIndex(dimension, params, hnsw=True))
    held[key] = scoped
    return scoped


def fill(
    source: FaissIndex, scoped: ScopeIndex, seqs: list[int], step: Callable[[], None] = lambda: None
) -> None:
    """Copy the scope's vectors from the tenant's index (blocking: a worker thread),
    calling ``step`` before each chunk. Rows changed since ``register`` are left to the
    change that touched them."""
    for start in range(0, len(seqs), BUILD_CHUNK):
        step()
        ids, vectors = source.vectors_of(seqs[start : start + BUILD_CHUNK])
        scoped.index.add(ids, vectors, skip=scoped.touched)


async def build(
    held: ScopeIndexes,
    entry: ScopeIndex,
    source: FaissIndex,
    members: list[int],
    background: BackgroundThreads,
) -> None:
    """Fill a registered scope index on the background threads and turn it ready; it
    leaves ``held`` on failure."""
    try:
        await background.run(fill, source, entry, members, background.step, rows=len(members))
        entry.ready, entry.touched = True, set()
        log.info("scope %s=%s has a graph of its own: %d vectors", *entry.key, entry.index.size)
    finally:
        if not entry.ready and held.get(entry.key) is entry:
            del held[entry.key]


class Change(NamedTuple):
    """What one change of the tenant's rows does to one scope index."""

    scoped: ScopeIndex
    ids: np.ndarray  # rows that (now) belong to it
    vectors: np.ndarray
    leaving: np.ndarray  # rows that must leave it


def changes(
    held: ScopeIndexes, ids: np.ndarray, vectors: np.ndarray, rows: list[Memory], gone: set[int]
) -> list[Change]:
    """What a change of the tenant's rows means for each scope index: the rows that
    (now) belong to it, with their vectors, and those that must leave it."""
    out: list[Change] = []
    for scoped in list(held.values()):
        name, value = scoped.key
        inside = np.asarray([getattr(m, name) == value for m in rows], dtype=bool)
        outside = ids[~inside].tolist()
        if scoped.ready:
            leaving = [s for s in outside if scoped.index.contains(s)]
            leaving += [s for s in gone if scoped.index.contains(s)]
        else:
            # the copy may be adding any of these right now: remove them all, after it
            # (a removal waits for the copy's write lock; the copy skips what is touched)
            scoped.touched.update(ids.tolist())
            scoped.touched.update(gone)
            leaving = outside + list(gone)
        if inside.any() or leaving:
            out.append(Change(scoped, ids[inside], vectors[inside], np.asarray(leaving, np.int64)))
    return out


def apply(found: list[Change]) -> None:
    """Carry out ``changes`` (blocking: run in the worker thread that mutates the
    tenant's index)."""
    for scoped, ids, vectors, leaving in found:
        if len(ids):
            scoped.index.add(ids, vectors)
        if len(leaving):
            scoped.index.remove(leaving)


def bytes_of(held: ScopeIndexes) -> int:
    return sum(s.index.memory_bytes() for s in held.values())
