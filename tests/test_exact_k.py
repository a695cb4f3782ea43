"""Exactly k: a scoped or filtered search returns k results whenever k memories match.

pgvector applies a WHERE after its HNSW scan, so a selective filter over a large
tenant would silently return fewer rows; the service must not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import new_tenant
from tests.helpers import unit_vectors

N = 3000


@pytest.fixture(scope="module")
async def big_tenant(client: Any) -> tuple[dict[str, str], np.ndarray]:
    vecs = unit_vectors(N, seed=2024)
    h = (await new_tenant(client))["headers"]
    for start in range(0, N, 1000):
        items = [
            {
                "content": f"row {i}",
                "user_id": "rare" if i % 250 == 0 else "common",
                "metadata": {"bucket": i % 200, "i": i},
                "embedding": vecs[i].tolist(),
            }
            for i in range(start, start + 1000)
        ]
        r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
        assert r.status_code == 201, r.text
    return h, vecs


def brute_force(vecs: np.ndarray, query: np.ndarray, allowed: list[int], k: int) -> list[str]:
    scores = vecs[allowed] @ query
    order = np.argsort(-scores)[:k]
    return [f"row {allowed[j]}" for j in order]


async def test_selective_filter_and_scope_return_exactly_k(client: Any, big_tenant: tuple) -> None:
    h, vecs = big_tenant
    queries = unit_vectors(5, seed=7)
    for q in queries:
        # 15 of 3000 rows (0.5%) match the filter
        r = await client.post(
            "/v1/memories/search",
            json={"embedding": q.tolist(), "k": 10, "filter": {"metadata.bucket": 7}},
            headers=h,
        )
        assert r.status_code == 200, r.text
        got = [hit["memory"]["content"] for hit in r.json()["results"]]
        allowed = [i for i in range(N) if i % 200 == 7]
        assert got == brute_force(vecs, q, allowed, 10)
        # 12 of 3000 rows are in the rare scope
        r = await client.post(
            "/v1/memories/search", json={"embedding": q.tolist(), "k": 10, "user_id": "rare"}, headers=h
        )
        got = [hit["memory"]["content"] for hit in r.json()["results"]]
        assert got == brute_force(vecs, q, [i for i in range(N) if i % 250 == 0], 10)


async def test_unfiltered_search_returns_k_with_high_recall(client: Any, big_tenant: tuple) -> None:
    h, vecs = big_tenant
    hits = 0
    queries = unit_vectors(10, seed=8)
    for q in queries:
        r = await client.post("/v1/memories/search", json={"embedding": q.tolist(), "k": 10}, headers=h)
        body = r.json()
        assert len(body["results"]) == 10
        scores = [hit["score"] for hit in body["results"]]
        assert scores == sorted(scores, reverse=True)
        truth = set(brute_force(vecs, q, list(range(N)), 10))
        hits += len(truth & {hit["memory"]["content"] for hit in body["results"]})
    assert hits / 100 >= 0.9


async def test_fewer_matches_than_k_returns_all_matches(client: Any, big_tenant: tuple) -> None:
    h, _ = big_tenant
    q = unit_vectors(1, seed=9)[0].tolist()
    r = await client.post(
        "/v1/memories/search",
        json={"embedding": q, "k": 50, "filter": {"metadata.i": {"$in": [1, 2, 3]}}},
        headers=h,
    )
    assert sorted(hit["memory"]["content"] for hit in r.json()["results"]) == ["row 1", "row 2", "row 3"]
