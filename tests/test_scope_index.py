"""Scope indexes: a large, searched scope gets its own graph, which follows every change.

The reference is brute force over the same vectors; the database is real.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.models import Memory, MemoryPatch, NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from memory_service.search import scoped
from tests.conftest import new_tenant
from tests.helpers import eventually
from tests.test_hot_search import clustered

N, USERS = 1200, 4


async def test_a_large_scope_is_searched_in_its_own_graph_which_follows_every_change(
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
        tid = uuid.UUID((await new_tenant(client))["id"])
        vecs = clustered(N, seed=31)
        memories: list[Memory] = []
        for start in range(0, N, 600):
            written, _ = await runtime.memories.add_many(
                tid,
                [
                    NewMemory(f"row {i}", Scope(user_id=f"u{i % USERS}"), embedding=vecs[i].tolist())
                    for i in range(start, start + 600)
                ],
            )
            memories += written
        t = runtime.hot_search.indexes.ready(tid)
        assert t is not None
        key = ("user_id", "u1")

        async def scoped_search(q: np.ndarray, user: str = "u1", k: int = 10) -> list[int]:
            result = await runtime.search.search(
                tid, SearchRequest(embedding=q.tolist(), k=k, scope=Scope(user_id=user))
            )
            assert result.strategy == "faiss", result.strategy
            return [int(hit.memory.content.split()[1]) for hit in result.results]

        # the first scoped search is answered the ordinary way and asks for the graph
        queries = clustered(12, seed=32)
        await scoped_search(queries[0])
        async def graph_ready() -> bool:
            return key in t.scoped and t.scoped[key].ready

        await eventually(graph_ready, "the scope graph", deadline=30)
        entry = t.scoped[key]
        assert entry.index.size == N // USERS and entry.index.is_hnsw

        allowed = np.arange(1, N, USERS)
        found = 0
        for q in queries:
            used = entry.last_used
            got = await scoped_search(q)
            assert entry.last_used > used  # the scope's own graph answered
            assert len(got) == 10 and all(i % USERS == 1 for i in got)
            truth = allowed[np.argsort(-(vecs[allowed] @ q))[:10]]
            found += len(set(got) & set(truth.tolist()))
        assert found / (10 * len(queries)) >= 0.99

        # a new row in the scope is found at once (the writer reads its own write)
        fresh = clustered(1, seed=33)[0]
        await runtime.memories.add(
            tid, NewMemory(f"row {N}", Scope(user_id="u1"), embedding=fresh.tolist())
        )
        assert (await scoped_search(fresh, k=1)) == [N]
        assert entry.index.size == N // USERS + 1
        # a row of another scope never shows up in this one
        await runtime.memories.add(
            tid, NewMemory(f"row {N + 1}", Scope(user_id="u2"), embedding=fresh.tolist())
        )
        assert N + 1 not in await scoped_search(fresh)
        # a re-embedded row moves, a deleted one is gone
        moved = memories[5]  # row 5: u1
        await runtime.memories.update(tid, moved.id, MemoryPatch(content="row 5 moved"), None)
        there = runtime.memories.embedder.embed(["row 5 moved"])[0]
        assert (await scoped_search(np.asarray(there), k=1)) == [5]
        await runtime.memories.delete(tid, moved.id)
        assert 5 not in await scoped_search(fresh, k=50)
        assert entry.index.size == len(t.postings.scope_members(*key)) == N // USERS
    finally:
        await runtime.close()


def _row(seq: int, user: str) -> Memory:
    now = datetime.now(UTC)
    return Memory(f"m{seq}", "x", user, None, None, None, {}, 0.5, now, now, None, 1, seq=seq)


def test_a_change_during_the_copy_wins_over_the_copy() -> None:
    """While a scope's graph is being filled from the tenant's index, a change of a row
    (it left the scope, or was deleted) must not be undone by the copy."""
    vecs = clustered(6, seed=34)
    source = FaissIndex(384)
    source.add(np.arange(6), vecs)
    held: scoped.ScopeIndexes = {}
    entry = scoped.register(held, ("user_id", "u1"), FaissParams(), 384)
    members = [0, 1, 2, 3]  # read when the copy started
    # row 1 moved to another user and row 2 was deleted before the copy reached them;
    # row 4 joined the scope
    ids = np.asarray([1, 4])
    found = scoped.changes(
        held, ids, vecs[[1, 4]], [_row(1, "u2"), _row(4, "u1")], gone={2}
    )
    scoped.apply(found)
    scoped.fill(source, entry, members)
    ids_now, _ = entry.index.live_items()
    assert sorted(ids_now.tolist()) == [0, 3, 4]
