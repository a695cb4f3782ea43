"""The search service built from its parts, without the HTTP layer or a runtime.

Every part is the real one (PostgreSQL through a pool, the BM25 keyword search,
the pgvector path); only the embedder is the deterministic hash stand-in, since
the model is beside the point here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder, Embedder
from memory_service.errors import InvalidInput
from memory_service.infra import db, migrate, service_state
from memory_service.infra.pagination import CursorCodec
from memory_service.memories.models import NewMemory, Scope, SearchRequest, SearchResult
from memory_service.memories.service import MemoryService
from memory_service.memories.validation import MemoryValidator
from memory_service.records.tenants import TenantService
from memory_service.retrieval.keyword import KeywordSearch
from memory_service.search.keyword import KeywordRanking
from memory_service.search.service import SearchService
from memory_service.search.vector import VectorSearch


@pytest.fixture
async def pool(settings: Settings, database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    # the schema first: run alone, no app has migrated the test database yet
    with db.connect_sync(database_url) as conn:
        migrate.apply_migrations(conn, 384)
    pool = db.open_pool(database_url, settings)
    await pool.open(wait=True)
    yield pool
    await pool.close()


async def test_search_service_answers_every_mode_without_http(
    settings: Settings, pool: AsyncConnectionPool, hash_embedder: Embedder
) -> None:
    embedder = CachedEmbedder(hash_embedder)
    validator = MemoryValidator(settings, embedder.dimension)
    cursors = CursorCodec(await service_state.cursor_key(pool))
    heard: list[tuple[uuid.UUID, str, SearchResult]] = []

    async def listener(tid: uuid.UUID, request: SearchRequest, result: SearchResult) -> None:
        heard.append((tid, request.mode, result))

    memories = MemoryService(pool, embedder, settings, cursors, validator)
    search = SearchService(
        pool,
        settings,
        embedder,
        validator,
        VectorSearch(pool, settings, hot=None),
        KeywordRanking(KeywordSearch(pool, settings), hot=None),
        listeners=[listener],
    )
    tenant, _ = await TenantService(pool).create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    tid = uuid.UUID(tenant.id)
    texts = ["green tea in the morning", "black coffee at night", "a walk in the park"]
    await memories.add_many(tid, [NewMemory(t, Scope(user_id="u")) for t in texts])
    await memories.add(tid, NewMemory("green tea for another user", Scope(user_id="v")))

    scoped = Scope(user_id="u")
    for mode in ("vector", "keyword", "hybrid"):
        result = await search.search(tid, SearchRequest("green tea", k=2, scope=scoped, mode=mode))
        top: Any = result.results[0].memory
        assert top.content == "green tea in the morning", (mode, result)
        assert all(hit.memory.user_id == "u" for hit in result.results)
    assert [mode for _, mode, _ in heard] == ["vector", "keyword", "hybrid"]
    assert {t for t, _, _ in heard} == {tid}
    vector = heard[0][2]
    assert vector.strategy == "exact" and len(vector.results) == 2  # pgvector: few rows, exact
    with pytest.raises(InvalidInput):
        await search.search(tid, SearchRequest("x", mode="telepathy"))


async def forty_short_memories(
    pool: AsyncConnectionPool, narrow: Settings, hash_embedder: Embedder, *, runs: bool
) -> tuple[SearchService, uuid.UUID]:
    """A search service on ``narrow`` settings and a new tenant holding 40 three-word
    memories of user ``u`` (with ``runs``: spread over five runs)."""
    embedder = CachedEmbedder(hash_embedder)
    validator = MemoryValidator(narrow, embedder.dimension)
    cursors = CursorCodec(await service_state.cursor_key(pool))
    memories = MemoryService(pool, embedder, narrow, cursors, validator)
    search = SearchService(
        pool,
        narrow,
        embedder,
        validator,
        VectorSearch(pool, narrow, hot=None),
        KeywordRanking(KeywordSearch(pool, narrow), hot=None),
    )
    tenant, _ = await TenantService(pool).create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    tid = uuid.UUID(tenant.id)
    words = ["tea", "coffee", "park", "walk", "night", "morning", "green", "black", "cup"]
    texts = [
        f"{words[i % 9]} {words[(i * 4) % 9]} {words[(i * 7 + 2) % 9]} #{i}" for i in range(40)
    ]
    await memories.add_many(
        tid,
        [
            NewMemory(t, Scope(user_id="u", run_id=f"r{i % 5}" if runs else None))
            for i, t in enumerate(texts)
        ],
    )
    return search, tid


async def test_a_no_op_option_leaves_the_hybrid_ranking_alone(
    settings: Settings, pool: AsyncConnectionPool, hash_embedder: Embedder
) -> None:
    # few candidates and a deep re-rank pool: an option that asks for re-ranking must
    # not deepen what the fusion sees, or memories ranked past the candidate count on
    # one side would gain a share of the score they do not have without the option
    narrow = replace(settings, hybrid_candidates=4, rerank_candidates=40)
    search, tid = await forty_short_memories(pool, narrow, hash_embedder, runs=False)
    no_ops: list[dict[str, Any]] = [
        {"importance_weight": 0.0},
        {"recency_weight": 0.0},
        {"importance_weight": 0.5},  # every memory has the same importance
    ]
    for query in ("green tea", "black coffee at night", "a walk in the park", "cup of tea"):
        plain = await search.search(
            tid, SearchRequest(query, k=6, scope=Scope(user_id="u"), mode="hybrid")
        )
        expected = [hit.memory.id for hit in plain.results]
        assert len(expected) == 6
        for options in no_ops:
            request = SearchRequest(query, k=6, scope=Scope(user_id="u"), mode="hybrid")
            request.options = options
            result = await search.search(tid, request)
            assert [hit.memory.id for hit in result.results] == expected, (query, options)


async def test_context_in_hybrid_weighs_every_candidate_either_side_found(
    settings: Settings,
    pool: AsyncConnectionPool,
    hash_embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a conversation's members ranked past rerank_candidates in the fused list still
    # count for it: the context step gets the union of both sides' candidates
    from memory_service.search import service as search_module

    narrow = replace(settings, hybrid_candidates=4, rerank_candidates=4)
    search, tid = await forty_short_memories(pool, narrow, hash_embedder, runs=True)
    seen: list[set[str]] = []
    real = search_module.add_context

    def spy(hits: Any, path: Any, weight: float) -> Any:
        seen.append({hit.memory.id for hit in hits})
        return real(hits, path, weight)

    monkeypatch.setattr(search_module, "add_context", spy)
    scope = Scope(user_id="u")
    for query in ("green tea", "black coffee at night", "a walk in the park"):
        sides = [
            await search.search(tid, SearchRequest(query, k=4, scope=scope, mode=mode))
            for mode in ("vector", "keyword")
        ]
        union = {hit.memory.id for side in sides for hit in side.results}
        assert len(union) > narrow.rerank_candidates, query  # the sides disagree
        request = SearchRequest(query, k=1, scope=scope, mode="hybrid")
        request.options = {"context_by": "run_id"}
        result = await search.search(tid, request)
        assert result.strategy.endswith("+context(run_id)")
        assert seen[-1] == union, query


async def test_a_keyword_search_runs_inline_or_in_a_thread_by_what_it_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the held index's searches are timed; a cheap one stays on the event loop (a thread
    # hop costs more than it), a costly one goes to a worker thread
    from datetime import UTC, datetime

    from indexers.keyword_index import KeywordIndex
    from memory_service.memories.models import Memory
    from memory_service.memories.predicate import RowCheck
    from memory_service.search import keyword as module
    from memory_service.search.tenant import TenantIndex

    now = datetime.now(UTC)
    texts = ["green tea in the morning", "black coffee at night", "tea and biscuits"]
    t = TenantIndex(uuid.uuid4(), keywords=KeywordIndex())
    assert t.keywords is not None
    t.keywords.apply(list(enumerate(texts, start=1)))
    for seq, text in enumerate(texts, start=1):
        t.rows[seq] = Memory(f"m{seq}", text, "u", None, None, None, {}, 0.5, now, now, None, 1, seq=seq)
    hops: list[object] = []
    real = module.anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any) -> Any:
        hops.append(func)
        return await real(func, *args)

    monkeypatch.setattr(module.anyio.to_thread, "run_sync", counted)
    check = RowCheck.build(Scope(), None)
    assert check is not None

    async def search() -> list[str]:
        hits = await module._ranked(t, "tea", 2, check, None, False)
        assert hits is not None
        return [h.memory.content for h in hits]

    expected = ["tea and biscuits", "green tea in the morning"]
    assert await search() == expected  # not timed yet, a small index: inline
    assert hops == [] and t.keyword_cost_s is not None
    assert t.keyword_cost_s < module.INLINE_BUDGET_S
    t.keyword_cost_s = 10 * module.INLINE_BUDGET_S  # as if its searches had been slow
    assert await search() == expected
    assert len(hops) == 1  # to a thread, and timed there
    assert t.keyword_cost_s < 10 * module.INLINE_BUDGET_S  # the fast search pulls it down


async def test_the_learned_ranker_answers_alike_on_the_loop_or_in_a_thread(
    settings: Settings,
    pool: AsyncConnectionPool,
    hash_embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # candidates whose text is long are scored in a worker thread: the same scores
    from memory_service.search import service as search_module

    search, tid = await forty_short_memories(pool, settings, hash_embedder, runs=True)
    hopped: list[bool] = []
    real = search_module.anyio.to_thread.run_sync

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hopped.append(getattr(fn, "func", None) == search.ranker.rerank)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(search_module.anyio.to_thread, "run_sync", spy)
    answers, hops = [], []
    for limit in (10**9, 0):  # every text inline, then every text in a thread
        monkeypatch.setattr(search_module, "LEARNED_INLINE_CHARS", limit)
        request = SearchRequest("green tea in the morning", k=8, scope=Scope(user_id="u"))
        result = await search.search(tid, request)
        assert result.strategy.endswith("+learned")
        answers.append([(h.memory.id, h.score) for h in result.results])
        hops.append(sum(hopped))
        hopped.clear()
    assert answers[0] == answers[1] and len(answers[0]) == 8
    assert hops == [0, 1]
