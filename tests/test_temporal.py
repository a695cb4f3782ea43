"""Time expressions in the query: the grammar, and the soft preference through the app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from memory_service.retrieval.temporal import parse_time, parse_time_intent
from tests.conftest import assert_problem
from tests.test_retrieval import SEARCH, add_all, contents, search

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "window"),
    [
        ("What did Caroline do in May 2023?", ("2023-05-01", "2023-06-01")),
        ("plans for December, 2024", ("2024-12-01", "2025-01-01")),
        ("what happened during May", ("2025-05-01", "2025-06-01")),
        ("what happened in March", ("2026-03-01", "2026-04-01")),
        ("trips in 2022", ("2022-01-01", "2023-01-01")),
        ("what did I eat yesterday", ("2026-03-17", "2026-03-18")),
        ("meetings today", ("2026-03-18", "2026-03-19")),
        ("what did we decide last week", ("2026-03-04", "2026-03-12")),
        ("the concert two weeks ago", ("2026-03-01", "2026-03-08")),
    ],
)
def test_expressions_become_windows(query: str, window: tuple[str, str]) -> None:
    intent = parse_time_intent(query, NOW)
    assert intent is not None and intent.order is None
    assert intent.start is not None and intent.end is not None
    assert (intent.start.date().isoformat(), intent.end.date().isoformat()) == window


@pytest.mark.parametrize(
    ("query", "order"),
    [
        ("the most recent trip", "latest"),
        ("when was the last time we talked", "latest"),
        ("Which city did she visit first?", "earliest"),
    ],
)
def test_expressions_become_orderings(query: str, order: str) -> None:
    intent = parse_time_intent(query, NOW)
    assert intent is not None and intent.order == order and intent.start is None


@pytest.mark.parametrize(
    "query", ["Did May call about the invoice?", "May I borrow the car", "the 300 series", ""]
)
def test_words_that_only_look_like_time_are_left_alone(query: str) -> None:
    assert parse_time_intent(query, NOW) is None


def test_memory_times_are_read_from_metadata_values() -> None:
    assert parse_time("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, tzinfo=UTC)
    assert parse_time("June 3, 2021") == datetime(2021, 6, 3, tzinfo=UTC)
    assert parse_time("2024-02-29T10:00:00Z") == datetime(2024, 2, 29, 10, tzinfo=UTC)
    assert parse_time("31 February, 2023") is None
    assert parse_time("soon") is None and parse_time(12) is None


async def test_a_time_expression_prefers_memories_of_that_time(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    for month, dish in [("2023-03-14", "ramen"), ("2023-05-20", "tacos"), ("2023-08-02", "curry")]:
        await add_all(
            client, h, [f"We had {dish} for dinner"], user_id="u", metadata={"date": month}
        )
    body = await search(
        client, h, query="what did we have for dinner in May 2023", k=3, user_id="u", explain=True
    )
    assert contents(body)[0] == "We had tacos for dinner"
    assert "+time(2023-05-01..2023-06-01:" in body["strategy"]
    assert body["results"][0]["components"]["time"] == pytest.approx(0.2)
    for hit in body["results"]:
        assert hit["score"] == pytest.approx(sum(hit["components"].values()), abs=1e-5)
    latest = await search(client, h, query="the most recent dinner", k=3, user_id="u")
    assert contents(latest)[0] == "We had curry for dinner"
    # "May" the name is no time; time_weight 0 turns expressions off
    for extra in ({"query": "what did May have for dinner"}, {"time_weight": 0.0}):
        body = await search(
            client, h, **{"query": "dinner in May 2023", "k": 3, "user_id": "u", **extra}
        )
        assert "+time(" not in body["strategy"]
    r = await client.post(SEARCH, json={"query": "x", "time_weight": 2}, headers=h)
    assert_problem(r, r.status_code, mentions="time_weight")
    assert r.status_code in (400, 422)
