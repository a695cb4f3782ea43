"""The FAISS memory budget holds, whatever order tenants arrive, load and grow in."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.models import NewMemory, SearchRequest
from memory_service.runtime import Runtime
from tests.conftest import new_tenant
from tests.helpers import unit_vectors


async def start(
    settings: Settings, database_url: str, embedder: Embedder, tmp: Path, budget_mb: int = 1
) -> Runtime:
    # a tenant of n rows takes about 256 KiB + n * 3.3 KiB; nothing preloaded, so only
    # the tenants of the test arrive, in the order it chooses
    return await Runtime.start(
        settings.with_(
            database_url=database_url,
            data_dir=str(tmp),
            faiss_memory_budget_mb=budget_mb,
            faiss_preload=False,
        ),
        embedder=embedder,
    )


async def add(runtime: Runtime, tid: str, vecs: Any, start: int, stop: int) -> None:
    await runtime.memories.add_many(
        uuid.UUID(tid),
        [NewMemory(f"v {i}", embedding=vecs[i].tolist()) for i in range(start, stop)],
    )


async def strategy(runtime: Runtime, tid: str, vector: Any) -> str:
    result = await runtime.search.search(uuid.UUID(tid), SearchRequest(embedding=vector, k=5))
    return result.strategy


async def test_the_memory_budget_leaves_big_tenants_to_pgvector(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path, client: Any
) -> None:
    runtime = await Runtime.start(
        settings.with_(database_url=database_url, data_dir=str(tmp_path), faiss_memory_budget_mb=1),
        embedder=hash_embedder,
    )  # preloading what other tenants the database holds, as a restarted service does
    try:
        assert runtime.hot_search is not None and await runtime.hot_search.wait_ready(120)
        big, small = (await new_tenant(client))["id"], (await new_tenant(client))["id"]
        vecs = unit_vectors(700, seed=18)
        for tid, count in ((big, 700), (small, 20)):
            await runtime.memories.add_many(
                uuid.UUID(tid),
                [NewMemory(f"v {i}", embedding=vecs[i].tolist()) for i in range(count)],
            )
        for tid, held in ((big, False), (small, True)):
            result = await runtime.search.search(
                uuid.UUID(tid), SearchRequest(embedding=vecs[3].tolist(), k=5)
            )
            assert result.results[0].memory.content == "v 3"
            assert (result.strategy == "faiss") is held, result.strategy
        status = runtime.index_status["faiss"]()
        assert status["bytes"] <= status["budget_bytes"]
    finally:
        await runtime.close()


async def test_tenants_arriving_together_never_share_the_same_room(
    settings: Settings,
    database_url: str,
    hash_embedder: Embedder,
    tmp_path: Path,
    client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Four tenants of 100 rows search at once, three fit: while one loads, its room is taken."""
    vecs = unit_vectors(100, seed=19)
    tenants = [(await new_tenant(client))["id"] for _ in range(4)]
    seeding = await start(settings, database_url, hash_embedder, tmp_path / "seed")
    try:
        for tid in tenants:
            await add(seeding, tid, vecs, 0, 100)
    finally:
        await seeding.close()
    runtime = await start(settings, database_url, hash_embedder, tmp_path / "serve", 2)
    try:
        await asyncio.gather(*(strategy(runtime, tid, vecs[1].tolist()) for tid in tenants))
        status = runtime.index_status["faiss"]()
        assert status["bytes"] <= status["budget_bytes"], status
        assert 1 <= status["tenants"] <= 3, status
        # refused up front, not loaded for nothing and then let go
        assert "outgrew the FAISS budget" not in caplog.text
    finally:
        await runtime.close()


async def test_a_tenant_that_outgrows_the_budget_is_let_go(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path, client: Any
) -> None:
    vecs = unit_vectors(800, seed=20)
    tid = (await new_tenant(client))["id"]
    runtime = await start(settings, database_url, hash_embedder, tmp_path)
    try:
        await add(runtime, tid, vecs, 0, 100)
        assert await strategy(runtime, tid, vecs[3].tolist()) == "faiss"
        for first in range(100, 800, 100):  # it grows while held, past what 1 MiB holds
            await add(runtime, tid, vecs, first, first + 100)
        status = runtime.index_status["faiss"]()
        assert status["bytes"] <= status["budget_bytes"], status
        assert status["tenants"] == 0, status
        result = await runtime.search.search(
            uuid.UUID(tid), SearchRequest(embedding=vecs[700].tolist(), k=5)
        )
        assert result.strategy != "faiss"
        assert result.results[0].memory.content == "v 700"  # pgvector serves it, all of it
    finally:
        await runtime.close()
