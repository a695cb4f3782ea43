"""Every operator of the filter language, through search and listing, against expectations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import page_all, unit_vectors

DOCS = [
    {"content": "d0", "user_id": "u1", "importance": 0.9,
     "metadata": {"topic": "food", "year": 2019, "tags": ["a", "b"], "geo": {"city": "Oslo"}, "flag": True}},
    {"content": "d1", "user_id": "u1", "agent_id": "ag", "importance": 0.2,
     "metadata": {"topic": "travel", "year": 2021, "tags": ["b"], "geo": {"city": "Rome"}, "note": "green tea"}},
    {"content": "d2", "user_id": "u2", "namespace": "work", "importance": 0.5,
     "metadata": {"topic": "food", "year": 2023.5, "tags": [], "name": "beta", "flag": False}},
    {"content": "d3", "user_id": "u2", "run_id": "r1", "importance": 0.7,
     "metadata": {"topic": "work", "year": "2020", "name": "alpha"}},
    {"content": "d4", "importance": 0.1, "metadata": {}},
]

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"metadata.topic": "food"}, {"d0", "d2"}),
    ({"metadata.topic": {"$eq": "food"}}, {"d0", "d2"}),
    ({"metadata.topic": {"$ne": "food"}}, {"d1", "d3", "d4"}),
    ({"metadata.year": {"$gt": 2019}}, {"d1", "d2"}),  # "2020" is a string: numbers compare as numbers
    ({"metadata.year": {"$gte": 2019}}, {"d0", "d1", "d2"}),
    ({"metadata.year": {"$lt": 2021}}, {"d0"}),
    ({"metadata.year": {"$lte": 2021}}, {"d0", "d1"}),
    ({"metadata.name": {"$gt": "alpha"}}, {"d2"}),  # strings compare as strings
    ({"metadata.year": {"$gte": 2020, "$lt": 2023}}, {"d1"}),
    ({"metadata.topic": {"$in": ["travel", "work"]}}, {"d1", "d3"}),
    ({"metadata.topic": {"$nin": ["travel", "work"]}}, {"d0", "d2", "d4"}),
    ({"metadata.note": {"$exists": True}}, {"d1"}),
    ({"metadata.note": {"$exists": False}}, {"d0", "d2", "d3", "d4"}),
    ({"metadata.tags": {"$contains": "b"}}, {"d0", "d1"}),
    ({"metadata.note": {"$contains": "green"}}, {"d1"}),
    ({"metadata.geo.city": "Rome"}, {"d1"}),
    ({"metadata.flag": True}, {"d0"}),
    ({"metadata.flag": False}, {"d2"}),
    ({"user_id": "u1"}, {"d0", "d1"}),
    ({"user_id": {"$ne": "u1"}}, {"d2", "d3", "d4"}),
    ({"user_id": {"$in": ["u2"]}}, {"d2", "d3"}),
    ({"user_id": {"$nin": ["u2"]}}, {"d0", "d1", "d4"}),
    ({"agent_id": {"$exists": True}}, {"d1"}),
    ({"namespace": "work"}, {"d2"}),
    ({"run_id": "r1"}, {"d3"}),
    ({"importance": {"$gte": 0.5}}, {"d0", "d2", "d3"}),
    ({"importance": {"$lt": 0.2}}, {"d4"}),
    ({"created_at": {"$gt": "2000-01-01T00:00:00Z"}}, {"d0", "d1", "d2", "d3", "d4"}),
    ({"updated_at": {"$lt": "2000-01-01T00:00:00+00:00"}}, set()),
    ({"$or": [{"metadata.topic": "work"}, {"importance": {"$gt": 0.8}}]}, {"d0", "d3"}),
    ({"$and": [{"metadata.topic": "food"}, {"user_id": "u2"}]}, {"d2"}),
    ({"$not": {"metadata.topic": "food"}}, {"d1", "d3", "d4"}),
    ({"$not": {"metadata.year": {"$gt": 2020}}}, {"d0", "d3", "d4"}),
    ({}, {"d0", "d1", "d2", "d3", "d4"}),
]


@pytest.fixture
async def loaded(client: Any, tenant: dict) -> dict[str, str]:
    vecs = unit_vectors(len(DOCS), seed=123)
    items = [{**doc, "embedding": vecs[i].tolist()} for i, doc in enumerate(DOCS)]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    return tenant["headers"]


async def test_each_operator_in_search_and_list(client: Any, loaded: dict[str, str]) -> None:
    query = unit_vectors(1, seed=5)[0].tolist()
    for flt, expected in CASES:
        r = await client.post(
            "/v1/memories/search", json={"embedding": query, "k": 50, "filter": flt}, headers=loaded
        )
        assert r.status_code == 200, (flt, r.text)
        got = {hit["memory"]["content"] for hit in r.json()["results"]}
        assert got == expected, flt
        listed = await page_all(client, loaded, {"filter": json.dumps(flt), "limit": 2})
        assert {m["content"] for m in listed} == expected, flt


async def test_filter_values_are_parameters_not_sql(client: Any, loaded: dict[str, str]) -> None:
    hostile = {"metadata.topic": "food' OR '1'='1", "metadata.x';DROP_TABLE_memories;--": 1}
    query = unit_vectors(1, seed=5)[0].tolist()
    r = await client.post(
        "/v1/memories/search", json={"embedding": query, "k": 10, "filter": hostile}, headers=loaded
    )
    assert r.status_code == 200 and r.json()["results"] == []
    assert len(await page_all(client, loaded, {})) == len(DOCS)
