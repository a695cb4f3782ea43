"""Grouped search (``group_by``) through the real app and model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import assert_problem
from tests.test_retrieval import SEARCH, contents, search

TRIP = [
    "I booked the flights to Tokyo for our Japan trip in April",
    "During the Japan trip we want to see the temples in Kyoto",
    "My packing list for the Japan trip: rail pass, adapters, cash",
]
SINGLE = "Our Japan trip"
NOISE = [
    "The dentist appointment is on Monday",
    "My sister adopted a grey cat",
    "The car needs new winter tyres",
]


async def add(client: Any, headers: dict[str, str], items: list[dict[str, Any]]) -> None:
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=headers)
    assert r.status_code == 201, r.text


@pytest.fixture
async def conversations(client: Any, tenant: dict[str, Any]) -> dict[str, str]:
    items = [{"content": t, "user_id": "u", "run_id": "trip"} for t in TRIP]
    items.append({"content": SINGLE, "user_id": "u", "run_id": "note"})
    items += [{"content": t, "user_id": "u", "run_id": f"misc-{i}"} for i, t in enumerate(NOISE)]
    await add(client, tenant["headers"], items)
    return dict(tenant["headers"])


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
async def test_a_group_of_several_matches_outranks_a_single_match(
    client: Any, conversations: dict[str, str], mode: str
) -> None:
    query = "the Japan trip"
    plain = await search(client, conversations, query=query, k=4, user_id="u", mode=mode)
    assert plain["results"][0]["memory"]["content"] == SINGLE  # alone, the single one wins
    assert "groups" not in plain
    body = await search(
        client, conversations, query=query, k=2, user_id="u", mode=mode, group_by="run_id"
    )
    groups = body["groups"]
    assert [g["key"] for g in groups] == ["trip", "note"], groups
    assert body["strategy"].endswith("+group(run_id)")
    trip = groups[0]
    assert len(trip["memories"]) == 3  # the default group_size
    assert {h["memory"]["content"] for h in trip["memories"]} == set(TRIP)
    scores = [h["score"] for h in trip["memories"]]
    assert scores == sorted(scores, reverse=True)
    assert trip["score"] == pytest.approx(scores[0] + 0.5 * sum(scores[1:]), abs=1e-5)
    assert groups[1]["score"] == pytest.approx(groups[1]["memories"][0]["score"], abs=1e-6)
    # results: the groups' members, flattened in group order
    assert body["results"] == [h for g in groups for h in g["memories"]]


async def test_group_size_and_metadata_paths(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    items: list[dict[str, Any]] = [
        {"content": t, "user_id": "u", "metadata": {"talk": {"session": 7}}} for t in TRIP
    ]
    items.append({"content": SINGLE, "user_id": "u"})  # no session: a group of its own
    items += [{"content": t, "user_id": "u", "metadata": {"talk": {"session": 8}}} for t in NOISE]
    await add(client, h, items)
    body = await search(
        client,
        h,
        query="Japan trip",
        k=10,
        user_id="u",
        group_by="metadata.talk.session",
        group_size=2,
        explain=True,
    )
    by_key = {g["key"]: g for g in body["groups"]}
    assert set(by_key) == {7, 8, None}
    assert all(len(g["memories"]) <= 2 for g in body["groups"])
    assert len(by_key[7]["memories"]) == 2
    assert [m["memory"]["content"] for m in by_key[None]["memories"]] == [SINGLE]
    assert len(body["results"]) == 5
    assert all("components" in hit for hit in body["results"])


async def test_bad_grouping_is_a_problem(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"group_by": "content"}, "group_by"),
        ({"group_by": "metadata.a b"}, "group_by"),
        ({"group_by": "metadata."}, "group_by"),
        ({"group_by": "metadata." + ".".join("abcdefghi")}, "group_by"),
        ({"group_by": 3}, "group_by"),
        ({"group_by": "run_id", "group_size": 0}, "group_size"),
        ({"group_by": "run_id", "group_size": 101}, "group_size"),
        ({"group_size": 2}, "group_size"),
        ({"group_by": "run_id", "diversity": 0.3}, "diversity"),
        ({"group_by": "run_id", "as_of": "2026-01-01T00:00:00Z"}, "as_of"),
    ]
    for extra, mentions in cases:
        r = await client.post(SEARCH, json={"query": "x", **extra}, headers=h)
        assert r.status_code in (400, 422), (extra, r.text)
        assert_problem(r, r.status_code, mentions=mentions)


async def test_context_by_lets_a_conversation_lift_its_members(
    client: Any, conversations: dict[str, str]
) -> None:
    query = "the Japan trip"
    plain = await search(client, conversations, query=query, k=4, user_id="u", mode="hybrid", explain=True)
    assert plain["results"][0]["memory"]["content"] == SINGLE
    assert not plain["strategy"].endswith("+context(run_id)")  # a named mode gets no default
    body = await search(
        client,
        conversations,
        query=query,
        k=4,
        user_id="u",
        mode="hybrid",
        context_by="run_id",
        context_weight=1.0,
        explain=True,
    )
    assert body["strategy"].endswith("+context(run_id)")
    top = body["results"][0]
    assert top["memory"]["run_id"] == "trip"
    assert set(contents(body)[:3]) == set(TRIP)  # results stay single memories
    before = {h["memory"]["id"]: h["score"] for h in plain["results"]}
    rest = [before[h["memory"]["id"]] for h in body["results"][1:3]]
    # the other members' scores, and the best neighbour's again (the three were written
    # one after another, so each is within two writes of the others)
    expected_share = sum(rest) + max(rest)
    assert top["components"]["context"] == pytest.approx(expected_share, abs=1e-4)
    assert top["score"] == pytest.approx(sum(top["components"].values()), abs=1e-5)
    lone = next(h for h in body["results"] if h["memory"]["content"] == SINGLE)
    assert "context" not in lone["components"]  # its conversation has no other match


async def test_a_search_that_names_no_mode_takes_context_from_its_run(
    client: Any, conversations: dict[str, str]
) -> None:
    """The default ranking lends each memory a share (0.2) of its run's other matches,
    and naming any context or group option (or a mode) takes the default out."""
    default = await search(client, conversations, query="the Japan trip", k=4, user_id="u", explain=True)
    assert default["strategy"].endswith("+context(run_id)")
    shares = {h["memory"]["content"]: h["components"].get("context", 0.0) for h in default["results"]}
    assert all(shares[t] > 0 for t in TRIP if t in shares) and any(t in shares for t in TRIP)
    assert shares[SINGLE] == 0.0  # its run holds no other match
    own = await search(
        client, conversations, query="the Japan trip", k=4, user_id="u", context_by="agent_id"
    )
    assert own["strategy"].endswith("+context(agent_id)")
    grouped = await search(client, conversations, query="the Japan trip", k=4, user_id="u", group_by="run_id")
    assert "+context(" not in grouped["strategy"]


async def test_bad_context_is_a_problem(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for extra, mentions in [
        ({"context_by": "content"}, "context_by"),
        ({"context_by": "metadata.a b"}, "context_by"),
        ({"context_weight": 0.3}, "context_weight"),
        ({"context_by": "run_id", "context_weight": 1.5}, "context_weight"),
    ]:
        r = await client.post(SEARCH, json={"query": "x", **extra}, headers=h)
        assert r.status_code in (400, 422), (extra, r.text)
        assert_problem(r, r.status_code, mentions=mentions)


def test_context_lends_the_group_and_again_the_best_neighbour_within_two_writes() -> None:
    from datetime import UTC, datetime

    from memory_service.memories.models import Memory, SearchHit
    from memory_service.retrieval.grouping import add_context

    now = datetime(2026, 1, 1, tzinfo=UTC)

    def hit(seq: int, score: float, run: str | None) -> SearchHit:
        memory = Memory(f"m{seq}", f"turn {seq}", "u", None, run, None, {}, 0.5, now, now, None, 1, seq=seq)
        return SearchHit(memory, score, {"vector": score})

    hits = [hit(10, 0.9, "a"), hit(12, 0.5, "a"), hit(30, 0.4, "a"), hit(11, 0.8, "b"), hit(5, 0.7, None)]
    ranked = {h.memory.seq: h for h in add_context(hits, ("run_id",), 0.5)}
    shares = {seq: (h.components or {}).get("context", 0.0) for seq, h in ranked.items()}
    # seq 10: the group's others (0.5 + 0.4) and its neighbour 12 (0.5) again
    assert shares[10] == pytest.approx(0.5 * (0.9 + 0.5))
    assert shares[12] == pytest.approx(0.5 * (1.3 + 0.9))  # 10 is two writes before it
    assert shares[30] == pytest.approx(0.5 * 1.4)  # no member of its run near it
    assert shares[11] == 0.0  # seq 10 and 12 are near, but of another run
    assert shares[5] == 0.0  # no run: nothing lent
    assert ranked[10].score == pytest.approx(0.9 + shares[10])


def test_context_groups_by_value_and_type_and_leaves_ungrouped_pools_alone() -> None:
    from datetime import UTC, datetime

    from memory_service.memories.models import Memory, SearchHit
    from memory_service.retrieval.grouping import add_context

    now = datetime(2026, 1, 1, tzinfo=UTC)

    def hit(seq: int, score: float, session: Any) -> SearchHit:
        metadata = {} if session is None else {"session": session}
        memory = Memory(f"m{seq}", "t", "u", None, None, None, metadata, 0.5, now, now, None, 1, seq=seq)
        return SearchHit(memory, score, {"vector": score})

    # 1, 1.0, "1" and true are four sessions: none lends to another
    hits = [hit(1, 0.9, 1), hit(20, 0.8, 1.0), hit(40, 0.7, "1"), hit(60, 0.6, True)]
    ranked = add_context(hits, ("metadata", "session"), 0.5)
    assert all("context" not in (h.components or {}) for h in ranked)
    same = [hit(1, 0.9, {"a": 1, "b": 2}), hit(20, 0.8, {"b": 2, "a": 1})]  # one session
    lent = {h.memory.seq: (h.components or {}).get("context") for h in add_context(same, ("metadata", "session"), 0.5)}
    assert lent == {1: pytest.approx(0.4), 20: pytest.approx(0.45)}
    # no memory has the value: the pool comes back as it was, order included
    tied = [hit(7, 0.5, None), hit(3, 0.5, None)]
    assert [h.memory.seq for h in add_context(tied, ("run_id",), 0.5)] == [7, 3]
