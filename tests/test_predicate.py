"""The in-process filter answers exactly what the SQL filter answers, row for row."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from memory_service.config import Settings
from memory_service.infra import db
from memory_service.memories import repository as repo
from memory_service.memories.filters import compile_filter
from memory_service.memories.models import Scope
from memory_service.memories.predicate import compile_predicate
from memory_service.search.postings import Postings

METADATA: list[dict[str, Any]] = [
    {"topic": "food", "year": 2021, "tags": ["a", "b"], "nested": {"x": 1, "y": "s"}},
    {"topic": "travel", "year": 2019.0, "tags": ["b"], "nested": {"x": 2}},
    {"topic": "food", "year": "2020", "tags": "abc", "flag": True},
    {"topic": None, "year": 1, "flag": 1, "list": [{"x": 1}, 5, "5"]},
    {"tags": [1, 2.0, True], "nested": {"x": [1, 2]}, "deep": {"a": {"b": {"c": 3}}}},
    {},
]
FILTERS: list[dict[str, Any]] = [
    {"metadata.topic": "food"},
    {"metadata.topic": None},
    {"metadata.topic": {"$ne": "food"}},
    {"metadata.year": {"$gte": 2020}},
    {"metadata.year": {"$lt": 2020.5}},
    {"metadata.year": 2019},
    {"metadata.year": {"$in": [2021, "2020", 1]}},
    {"metadata.year": {"$nin": [2021]}},
    {"metadata.tags": {"$contains": "b"}},
    {"metadata.tags": {"$contains": 2}},
    {"metadata.tags": {"$contains": True}},
    {"metadata.tags": {"$contains": "bc"}},
    {"metadata.flag": True},
    {"metadata.flag": 1},
    {"metadata.flag": {"$exists": True}},
    {"metadata.nested.x": 1},
    {"metadata.nested.x": {"$exists": False}},
    {"metadata.nested.y": {"$in": ["s", None]}},
    {"metadata.list.0.x": {"$exists": True}},
    {"metadata.list.1": {"$gt": 4}},
    {"metadata.list.-1": {"$in": ["5"]}},
    {"metadata.list.0.x": 1},
    {"metadata.deep.a.b.c": {"$lte": 3}},
    {"$or": [{"metadata.topic": "travel"}, {"metadata.flag": {"$exists": True}}]},
    {"$and": [{"metadata.topic": "food"}, {"$not": {"metadata.year": {"$gt": 2020}}}]},
    {"$not": {"metadata.topic": {"$in": ["food"]}}},
    {"$not": {}},
    {"user_id": "u1"},
    {"user_id": {"$ne": "u1"}},
    {"agent_id": None},
    {"agent_id": {"$nin": ["x"]}},
    {"user_id": {"$contains": "1"}},
    {"importance": {"$gt": 0.4}},
    {"importance": {"$in": [0.5]}},
    {"created_at": {"$gte": "2000-01-01T00:00:00Z"}},
    {"updated_at": {"$lt": "2000-01-01T00:00:00+00:00"}},
]


@pytest.fixture
async def rows(settings: Settings, database_url: str, client: Any) -> Any:
    from tests.conftest import new_tenant

    tenant = await new_tenant(client)
    items = [
        {"content": f"row {i}", "metadata": meta, "user_id": f"u{i % 2}", "importance": 0.25 * (i % 4)}
        for i, meta in enumerate(METADATA)
    ]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    pool = db.open_pool(database_url, settings)
    await pool.open(wait=True)
    yield pool, uuid.UUID(tenant["id"])
    await pool.close()


async def test_every_filter_matches_the_same_rows_in_process_and_in_sql(rows: Any) -> None:
    pool, tid = rows
    async with pool.connection() as conn:
        everything = await repo.list_page(conn, tid, Scope(), None, 0, 100)
        assert len(everything) == len(METADATA)
        for spec in FILTERS:
            in_sql = await repo.list_page(conn, tid, Scope(), compile_filter(spec), 0, 100)
            predicate = compile_predicate(spec)
            assert predicate is not None, spec
            in_process = [m.id for m in everything if predicate(m)]
            assert in_process == [m.id for m in in_sql], spec


async def test_posting_lists_never_miss_a_matching_row(rows: Any) -> None:
    pool, tid = rows
    postings = Postings()
    async with pool.connection() as conn:
        everything = await repo.list_page(conn, tid, Scope(), None, 0, 100)
        for memory in everything:
            postings.add(memory)
        narrowed = decided = 0
        for spec in FILTERS:
            for scope in (Scope(), Scope(user_id="u1")):
                in_sql = await repo.list_page(conn, tid, scope, compile_filter(spec), 0, 100)
                candidates, exact = postings.narrow(scope, spec)
                if candidates is not None:
                    narrowed += 1
                    assert {m.seq for m in in_sql} <= candidates, (spec, scope)
                if exact:  # the lists alone are the answer: nothing more, nothing less
                    decided += 1
                    assert {m.seq for m in in_sql} == candidates, (spec, scope)
        assert narrowed > len(FILTERS)  # most filters and every scope narrow
        assert decided >= 4  # plain equalities and scopes are decided by the lists alone


def test_string_ordering_is_left_to_the_database() -> None:
    assert compile_predicate({"metadata.topic": {"$gt": "a"}}) is None
    assert compile_predicate({"user_id": {"$lte": "u"}}) is None
    assert compile_predicate(None) is not None
