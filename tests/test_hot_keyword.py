"""Keyword search from the held tenant's in-process index, against the SQL path.

A service process that holds a tenant answers ``mode: "keyword"`` (and the
keyword half of hybrid) from its keyword index: the same memories as
PostgreSQL full-text search, the same best match, scope and filters applied
exactly, its own writes at once and another process's about a second later; a
tenant it does not hold, or a filter it cannot decide, goes to SQL.
Embeddings come from the hash embedder: the model is beside the point here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.filters import compile_filter
from memory_service.memories.models import MemoryPatch, NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from memory_service.search.keyword import IN_DATABASE, IN_PROCESS
from tests.helpers import eventually, settled

TOPICS = ["green tea", "black coffee", "mountain walks", "sea kayaking", "sourdough bread"]
WORDS = ["morning", "evening", "weekend", "friends", "alone", "slowly", "often", "rarely"]


def corpus(n: int) -> list[NewMemory]:
    """Memories sharing words in varying measure, in two users and with metadata."""
    out = []
    for i in range(n):
        topic, word = TOPICS[i % len(TOPICS)], WORDS[(i * 7) % len(WORDS)]
        text = f"{topic} in the {word}" + (f", with {TOPICS[(i + 2) % 5]}" if i % 3 == 0 else "")
        meta = {"i": i, "parity": "even" if i % 2 == 0 else "odd"}
        out.append(NewMemory(text, Scope(user_id=f"u{i % 2}"), metadata=meta))
    return out


@pytest.fixture
async def runtime(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Runtime]:
    rt = await Runtime.start(
        settings.with_(database_url=database_url, data_dir=str(tmp_path / "a")),
        embedder=hash_embedder,
    )
    yield rt
    await rt.close()


async def new_tenant(rt: Runtime) -> uuid.UUID:
    tenant, _ = await rt.tenants.create_tenant(f"kw-{uuid.uuid4().hex[:8]}")
    return uuid.UUID(tenant.id)


async def keyword(rt: Runtime, tid: uuid.UUID, query: str, **extra: Any) -> tuple[str, list[str]]:
    request = SearchRequest(query, k=extra.pop("k", 5), mode="keyword", **extra)
    result = await rt.search.search(tid, request)
    return result.strategy, [hit.memory.id for hit in result.results]


async def in_sql(rt: Runtime, tid: uuid.UUID, query: str, **extra: Any) -> dict[str, float]:
    """PostgreSQL's ranking: memory id -> score, best first."""
    request = SearchRequest(query, k=extra.pop("k", 5), mode="keyword", **extra)
    flt = compile_filter(request.filter) if request.filter else None
    hits = await rt.search.keyword.database.search(tid, request, flt, request.k)
    return {hit.memory.id: hit.score for hit in hits}


def same_best(hot: list[str], sql: dict[str, float]) -> bool:
    """The held index's first match is one SQL ranks best (ties in any order)."""
    return sql[hot[0]] == pytest.approx(max(sql.values()))


async def test_the_held_index_finds_what_sql_finds(runtime: Runtime) -> None:
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(40))
    for query in ["green tea", "coffee in the evening", "walking mountains", "bread friends"]:
        strategy, hot = await keyword(runtime, tid, query, k=100)
        sql = await in_sql(runtime, tid, query, k=100)
        assert strategy == IN_PROCESS
        assert set(hot) == set(sql) and len(hot) == len(sql) > 0, query
        assert same_best(hot, sql), query
    # stop words alone match nothing, in both
    assert (await keyword(runtime, tid, "the and of"))[1] == []
    assert await in_sql(runtime, tid, "the and of") == {}


async def test_writes_updates_and_deletes_are_searchable_at_once(runtime: Runtime) -> None:
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(10))
    assert (await keyword(runtime, tid, "tea"))[0] == IN_PROCESS  # held now
    memory, _ = await runtime.memories.add(tid, NewMemory("a zeppelin over the harbour"))
    assert (await keyword(runtime, tid, "zeppelins"))[1] == [memory.id]
    await runtime.memories.update(tid, memory.id, MemoryPatch(content="an airship"), None)
    assert (await keyword(runtime, tid, "zeppelin"))[1] == []
    assert (await keyword(runtime, tid, "airship"))[1] == [memory.id]
    await runtime.memories.delete(tid, memory.id)
    assert (await keyword(runtime, tid, "airship")) == (IN_PROCESS, [])


async def test_another_process_sees_keyword_inserts_and_deletes_in_its_own_index(
    runtime: Runtime, settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> None:
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(10))
    other = await Runtime.start(
        settings.with_(
            database_url=database_url, data_dir=str(tmp_path / "b"), faiss_poll_interval_s=0.5
        ),
        embedder=hash_embedder,
    )
    try:
        for rt in (runtime, other):  # both running, not starting, before the clock starts
            await settled(rt)
        assert (await keyword(other, tid, "tea"))[0] == IN_PROCESS  # held by the other now
        memory, _ = await runtime.memories.add(tid, NewMemory("a zeppelin over the harbour"))

        async def found(query: str, expected: list[str], **extra: Any) -> bool:
            return await keyword(other, tid, query, **extra) == (IN_PROCESS, expected)

        # eventual (the default): the insert reaches the other process's index by itself
        await eventually(partial(found, "zeppelin", [memory.id]), "the insert")
        # strong applies the pending change first, so it sees a write at once
        airship, _ = await runtime.memories.add(tid, NewMemory("an airship at dawn"))
        assert await found("airship", [airship.id], consistency="strong")
        await runtime.memories.delete(tid, memory.id)
        await eventually(partial(found, "zeppelin", []), "the delete")
    finally:
        await other.close()


async def test_tenants_never_see_each_others_words(runtime: Runtime) -> None:
    mine, theirs = await new_tenant(runtime), await new_tenant(runtime)
    await runtime.memories.add(mine, NewMemory("my secret walrus plan"))
    await runtime.memories.add(theirs, NewMemory("their secret walrus plan"))
    for tid, owner in ((mine, "my"), (theirs, "their")):
        strategy, found = await keyword(runtime, tid, "walrus secret", k=10)
        assert strategy == IN_PROCESS and len(found) == 1
        rows = await runtime.memories.get(tid, found[0])
        assert rows.content.startswith(owner)


@pytest.mark.parametrize(
    ("scope", "flt"),
    [
        (Scope(user_id="u1"), None),
        (Scope(), {"metadata.parity": "even"}),
        (Scope(user_id="u0"), {"metadata.i": {"$gte": 20}}),  # not posted: the list grows
        (Scope(), {"metadata.i": {"$in": [3, 8, 13, 18, 23]}}),
    ],
)
async def test_filters_and_scope_give_exactly_k(
    runtime: Runtime, scope: Scope, flt: dict[str, Any] | None
) -> None:
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(60))
    for k in (1, 3, 8, 100):
        strategy, hot = await keyword(
            runtime, tid, "tea coffee bread", k=k, scope=scope, filter=flt
        )
        sql = await in_sql(runtime, tid, "tea coffee bread", k=1000, scope=scope, filter=flt)
        assert strategy == IN_PROCESS
        assert len(hot) == min(k, len(sql)) and set(hot) <= set(sql)
        assert same_best(hot, sql)


async def test_a_scoped_ranking_weighs_words_by_their_frequency_in_the_scope(
    runtime: Runtime,
) -> None:
    """SQL takes BM25's document frequencies from the rows in scope, and so does the held
    index: 'pear' is rare among u1's memories and common in the tenant, 'apple' the other
    way round, so in u1 the pear outranks the apples (tenant-wide it would not)."""
    tid = await new_tenant(runtime)
    pear = NewMemory("a pear on the table", Scope(user_id="u1"))
    apples = [NewMemory(f"an apple, number {i}", Scope(user_id="u1")) for i in range(4)]
    trees = [NewMemory(f"a pear tree in row {i}", Scope(user_id="u2")) for i in range(30)]
    added, _ = await runtime.memories.add_many(tid, [pear, *apples, *trees])
    scope = Scope(user_id="u1")
    strategy, hot = await keyword(runtime, tid, "apple pear", k=5, scope=scope)
    sql = await in_sql(runtime, tid, "apple pear", k=5, scope=scope)
    assert strategy == IN_PROCESS
    assert hot[0] == added[0].id == next(iter(sql))
    assert set(hot) == set(sql) and len(hot) == 5
    # over the whole tenant an apple is the rarer word, and comes first in both
    strategy, everywhere = await keyword(runtime, tid, "apple pear", k=5)
    assert strategy == IN_PROCESS and everywhere[0] != added[0].id
    assert same_best(everywhere, await in_sql(runtime, tid, "apple pear", k=5))


async def test_the_database_answers_what_the_process_cannot(
    runtime: Runtime, settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> None:
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(20))
    # a string ordering depends on the database's collation: SQL decides it
    strategy, found = await keyword(runtime, tid, "tea", filter={"metadata.parity": {"$gt": "e"}})
    assert strategy == IN_DATABASE and found
    # a process whose budget holds no tenant answers every keyword search in SQL
    small = await Runtime.start(
        settings.with_(
            database_url=database_url, data_dir=str(tmp_path / "c"), faiss_memory_budget_mb=0
        ),
        embedder=hash_embedder,
    )
    try:
        strategy, found = await keyword(small, tid, "green tea", k=4)
        assert strategy == IN_DATABASE
        assert set(found) == set(await in_sql(small, tid, "green tea", k=4))
        hybrid = await small.search.search(tid, SearchRequest("green tea", k=3, mode="hybrid"))
        assert IN_DATABASE in hybrid.strategy
    finally:
        await small.close()
    hybrid = await runtime.search.search(tid, SearchRequest("green tea", k=3, mode="hybrid"))
    assert hybrid.strategy.endswith(f"+{IN_PROCESS})") and len(hybrid.results) == 3


async def test_hybrid_ranks_alike_with_its_sides_side_by_side_or_in_turn(runtime: Runtime) -> None:
    """A query the model has not embedded yet runs the keyword side beside the embedding;
    once its vector is cached, a held tenant's two sides run one after the other. The
    answer is the same either way."""
    tid = await new_tenant(runtime)
    await runtime.memories.add_many(tid, corpus(30))
    assert runtime.search.vectors.holds(tid)
    for text in ("green tea in the evening", "sea kayaking with friends"):
        assert runtime.embedder.cached(text) is None
        request = SearchRequest(text, k=5, options={"explain": True})
        first = await runtime.search.search(tid, request)  # side by side
        assert runtime.embedder.cached(text) is not None
        again = await runtime.search.search(tid, request)  # in turn
        # no mode: hybrid with the default context by run (these memories have none), then
        # the learned ranker (30 candidates)
        expected = f"hybrid(faiss+{IN_PROCESS})+context(run_id)+learned"
        assert first.strategy == again.strategy == expected, first.strategy
        assert [(h.memory.id, h.score, h.components) for h in first.results] == [
            (h.memory.id, h.score, h.components) for h in again.results
        ]
