"""The consistency promise of search, on the in-process path.

The writing process reads its own writes (deletes included) at once; another
process sees a change about a second later (the tests allow ``PROPAGATION_DEADLINE_S``);
``"consistency": "strong"`` sees every committed change at once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from tests.conftest import new_tenant
from tests.helpers import eventually, settled, unit_vectors


@pytest.fixture
async def other_process(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Runtime]:
    """Another service process on the same database (its own data dir and indexes)."""
    runtime = await Runtime.start(
        settings.with_(database_url=database_url, data_dir=str(tmp_path)),
        embedder=hash_embedder,
    )
    yield await settled(runtime)
    await runtime.close()


async def ids_found(
    runtime: Runtime, tid: uuid.UUID, vector: np.ndarray, **request: Any
) -> tuple[str, list[str]]:
    result = await runtime.search.search(
        tid, SearchRequest(embedding=vector.tolist(), k=request.pop("k", 3), **request)
    )
    return result.strategy, [hit.memory.id for hit in result.results]


async def test_strong_sees_another_process_write_at_once_and_eventual_soon_after(
    client: Any, other_process: Runtime
) -> None:
    tenant = await new_tenant(client)
    tid, h = uuid.UUID(tenant["id"]), tenant["headers"]
    vecs = unit_vectors(4, seed=31)
    first = {"content": "a", "embedding": vecs[0].tolist()}
    r = await client.post("/v1/memories", json=first, headers=h)
    assert (await ids_found(other_process, tid, vecs[0]))[1] == [r.json()["id"]]  # held now
    for i in (1, 2, 3):
        body = {"content": f"n{i}", "embedding": vecs[i].tolist(), "metadata": {"i": i}}
        written = (await client.post("/v1/memories", json=body, headers=h)).json()["id"]
        strategy, found = await ids_found(other_process, tid, vecs[i], consistency="strong")
        assert strategy == "faiss" and found[0] == written
        # a filtered strong search sees the new row's metadata too
        _, found = await ids_found(
            other_process, tid, vecs[i], consistency="strong", filter={"metadata.i": i}
        )
        assert found == [written]
    moved = {"content": "moved", "metadata": {"i": 9}}
    await client.patch(f"/v1/memories/{written}", json=moved, headers=h)

    async def update_arrived() -> bool:
        return not (await ids_found(other_process, tid, vecs[3], filter={"metadata.i": 3}))[1]

    await eventually(update_arrived, "the update")
    await client.delete(f"/v1/memories/{written}", headers=h)
    _, found = await ids_found(other_process, tid, vecs[3], consistency="strong", k=10)
    assert written not in found


async def test_a_delete_is_never_returned_by_the_process_that_deleted_it(
    client: Any, other_process: Runtime
) -> None:
    tenant = await new_tenant(client)
    tid = uuid.UUID(tenant["id"])
    vecs = unit_vectors(60, seed=32)
    memories, _ = await other_process.memories.add_many(
        tid,
        [
            NewMemory(f"m{i}", Scope(user_id=f"u{i % 2}"), embedding=v.tolist())
            for i, v in enumerate(vecs)
        ],
    )
    assert (await ids_found(other_process, tid, vecs[0]))[0] == "faiss"
    for i, memory in enumerate(memories[:30]):
        await other_process.memories.delete(tid, memory.id)
        for scope in (Scope(), Scope(user_id=f"u{i % 2}")):
            strategy, found = await ids_found(other_process, tid, vecs[i], k=5, scope=scope)
            assert memory.id not in found and strategy in ("faiss", "exact")
            assert len(found) == 5
    await other_process.memories.delete_scope(tid, Scope(user_id="u1"))
    _, found = await ids_found(other_process, tid, vecs[31], k=30, scope=Scope(user_id="u1"))
    assert found == []
    _, found = await ids_found(other_process, tid, vecs[31], k=30)
    assert {m.id for m in memories[30:] if m.user_id == "u0"} == set(found)
