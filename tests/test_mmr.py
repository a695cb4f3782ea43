"""Diversity (maximal marginal relevance): the vectorised picker against the plain
algorithm, where the candidates' embeddings come from, and ``diversity`` over HTTP for
a tenant held in process and for one PostgreSQL serves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.infra import stages
from memory_service.memories import repository as repo
from memory_service.memories.models import Memory, NewMemory, Scope, SearchHit, SearchRequest
from memory_service.retrieval.mmr import mmr_order, select_diverse, similarity
from memory_service.runtime import Runtime
from memory_service.search.vector import VectorSearch
from tests.conftest import new_tenant

SEARCH = "/v1/memories/search"


def reference_order(scores: list[float], sim: list[list[float]], k: int, d: float) -> list[int]:
    """MMR as written down: each step scores every candidate not yet taken against every
    one taken, and takes the first best."""
    taken: list[int] = []
    for _ in range(k):
        best, best_value = -1, -float("inf")
        for i, score in enumerate(scores):
            if i in taken:
                continue
            novelty = max((sim[j][i] for j in taken), default=0.0)
            value = (1.0 - d) * score - d * novelty
            if best == -1 or value > best_value:
                best, best_value = i, value
        taken.append(best)
    return taken


def unit(rows: list[list[int]]) -> np.ndarray:
    v = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


@st.composite
def pools(draw: Any) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Small integer vectors (repeats and exact ties are common) and coarse scores."""
    n = draw(st.integers(2, 30))
    dim = draw(st.integers(1, 6))
    rows = draw(
        st.lists(st.lists(st.integers(-2, 2), min_size=dim, max_size=dim), min_size=n, max_size=n)
    )
    scores = draw(
        st.lists(
            st.sampled_from([0.0, 0.25, 0.5, 0.5, 0.75, 1.0]) | st.floats(-1, 1),
            min_size=n,
            max_size=n,
        )
    )
    k = draw(st.integers(1, n - 1))
    diversity = draw(st.sampled_from([1.0, 0.5, 1e-9]) | st.floats(0.0, 1.0, exclude_min=True))
    return unit(rows), np.asarray(scores, dtype=np.float64), k, diversity


@hypothesis.settings(max_examples=300, deadline=None)
@given(pools())
def test_vectorised_mmr_picks_what_the_plain_algorithm_picks(
    pool: tuple[np.ndarray, np.ndarray, int, float],
) -> None:
    vectors, scores, k, diversity = pool
    sim = similarity(vectors)
    expected = reference_order(scores.tolist(), sim.tolist(), k, diversity)
    assert mmr_order(scores, sim, k, diversity) == expected
    hits = [SearchHit(row(i), float(s)) for i, s in enumerate(scores)]
    chosen = select_diverse(hits, vectors, k, diversity)
    assert sorted(h.memory.seq for h in chosen) == sorted(expected)
    assert [h.score for h in chosen] == sorted((h.score for h in chosen), reverse=True)


def test_mmr_takes_the_best_first_and_then_the_unlike() -> None:
    vectors = unit([[1, 0], [1, 0], [0, 1]])
    assert mmr_order(np.array([0.9, 0.8, 0.5]), similarity(vectors), 2, 0.5) == [0, 2]
    assert mmr_order(np.array([0.9, 0.8, 0.5]), similarity(vectors), 2, 0.1) == [0, 1]
    # diversity 1 weighs novelty alone: the first candidate, then the most unlike it
    assert mmr_order(np.array([0.1, 0.8, 0.5]), similarity(vectors), 2, 1.0) == [0, 2]


def row(seq: int) -> Memory:
    now = datetime.now(UTC)
    return Memory(str(seq), "c", None, None, None, None, {}, 0.5, now, now, None, 1, seq=seq)


# -- where the embeddings come from ---------------------------------------------------------
@pytest.fixture
async def runtime(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Runtime]:
    rt = await Runtime.start(
        settings.with_(database_url=database_url, data_dir=str(tmp_path / "mmr")),
        embedder=hash_embedder,
    )
    yield rt
    await rt.close()


async def stored_unit_vectors(rt: Runtime, tid: uuid.UUID, hits: list[SearchHit]) -> np.ndarray:
    async with rt.pool.connection() as conn:
        rows = await repo.get_many(conn, tid, [h.memory.id for h in hits], with_embedding=True)
    vectors = np.stack([np.asarray(rows[h.memory.id].embedding, dtype=np.float32) for h in hits])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_a_held_tenant_diversifies_without_a_database_round_trip(runtime: Runtime) -> None:
    tenant, _ = await runtime.tenants.create_tenant(f"mmr-{uuid.uuid4().hex[:8]}")
    tid = uuid.UUID(tenant.id)
    texts = [f"note {i} about {topic}" for i in range(30) for topic in ("tea", "maps")]
    await runtime.memories.add_many(tid, [NewMemory(t, Scope(user_id="u")) for t in texts])
    request = SearchRequest("note about tea", k=5, options={"diversity": 0.6})
    clock, token = stages.start()
    try:
        result = await runtime.search.search(tid, request)
    finally:
        stages.stop(token)
    assert result.strategy.endswith("+mmr") and "keyword-hot" in result.strategy, result.strategy
    assert len(result.results) == 5
    assert "database" not in clock.seconds, clock.seconds  # embeddings from the FAISS index
    # the vectors it compared are the stored ones
    plain = await runtime.search.search(tid, SearchRequest("note about tea", k=40, mode="vector"))
    found = await runtime.search.vectors.embeddings(tid, plain.results, 384)
    stored = await stored_unit_vectors(runtime, tid, plain.results)
    np.testing.assert_allclose(found, stored, atol=1e-6)


async def test_postgresql_returns_the_embeddings_with_the_candidates(runtime: Runtime) -> None:
    tenant, _ = await runtime.tenants.create_tenant(f"mmr-{uuid.uuid4().hex[:8]}")
    tid = uuid.UUID(tenant.id)
    await runtime.memories.add_many(tid, [NewMemory(f"entry {i} of the log") for i in range(40)])
    query = np.asarray(runtime.embedder.embed_query("entry of the log"), dtype=np.float32)
    request = SearchRequest(embedding=query.tolist(), k=12)
    for threshold, strategy in ((10_000, "exact"), (0, "pgvector")):
        in_database = VectorSearch(
            runtime.pool, runtime.settings.with_(exact_search_threshold=threshold), None
        )
        plain = await in_database.search(tid, request, None, query)
        carried = await in_database.search(tid, request, None, query, with_vectors=True)
        assert carried.strategy == strategy
        assert [h.memory.id for h in carried.results] == [h.memory.id for h in plain.results]
        assert all(h.memory.embedding is None for h in plain.results)
        vectors = np.stack([np.asarray(h.memory.embedding) for h in carried.results])
        stored = await stored_unit_vectors(runtime, tid, carried.results)
        np.testing.assert_allclose(
            vectors / np.linalg.norm(vectors, axis=1, keepdims=True), stored, atol=1e-6
        )
        # the same rows answer as without embeddings, decoded alike
        for a, b in zip(plain.results, carried.results, strict=True):
            assert (a.memory.content, a.memory.metadata, a.memory.created_at) == (
                b.memory.content,
                b.memory.metadata,
                b.memory.created_at,
            )
            assert a.score == pytest.approx(b.score, abs=1e-9)
        # a hit of another path without its vector is read from the database
        bare = [
            SearchHit(Memory(**{**vars_of(h.memory), "embedding": None}), h.score)
            for h in carried.results
        ]
        np.testing.assert_allclose(await in_database.embeddings(tid, bare, 384), stored, atol=1e-6)


def vars_of(memory: Memory) -> dict[str, Any]:
    return {name: getattr(memory, name) for name in Memory.__slots__}


# -- over HTTP, held and not held ------------------------------------------------------------
COPIES = [
    "I love drinking espresso coffee",
    "I really love drinking espresso coffee",
    "I love drinking espresso coffee a lot",
]
OTHERS = ["Green tea is my afternoon drink", "Hot chocolate is nice in winter"]


async def diverse_answers(client: Any, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for mode in ("vector", "hybrid"):
        body = {"query": "what coffee do I drink", "k": 3, "user_id": "u", "mode": mode}
        plain = await client.post(SEARCH, json=body, headers=headers)
        diverse = await client.post(SEARCH, json={**body, "diversity": 0.7}, headers=headers)
        assert plain.status_code == 200 and diverse.status_code == 200, diverse.text
        found = [h["memory"]["content"] for h in diverse.json()["results"]]
        assert {h["memory"]["content"] for h in plain.json()["results"]} == set(COPIES), mode
        assert len(found) == 3 and sum(text in COPIES for text in found) == 1, (mode, found)
        scores = [h["score"] for h in diverse.json()["results"]]
        assert scores == sorted(scores, reverse=True)
        out[mode] = diverse.json()
    return out


async def test_diversity_over_http_held_and_not_held(
    client: Any, settings: Settings, database_url: str, real_embedder: Embedder, tmp_path: Path
) -> None:
    tenant = await new_tenant(client)
    h = tenant["headers"]
    items = [{"content": t, "user_id": "u"} for t in COPIES + OTHERS]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert r.status_code == 201, r.text
    held = await diverse_answers(client, h)
    assert "keyword-hot" in held["hybrid"]["strategy"], held["hybrid"]["strategy"]
    sql_only = settings.with_(
        database_url=database_url, data_dir=str(tmp_path / "sql"), faiss_enabled=False
    )
    async with AsyncTestClient(
        app=create_app(sql_only, embedder=real_embedder), timeout=60
    ) as plain:
        not_held = await diverse_answers(plain, h)
    assert "keyword-bm25" in not_held["hybrid"]["strategy"], not_held["hybrid"]["strategy"]
    for mode in ("vector", "hybrid"):  # the same candidates and vectors: the same picks
        ids = [[x["memory"]["id"] for x in answer[mode]["results"]] for answer in (held, not_held)]
        assert ids[0] == ids[1], mode
