"""``rerank`` (the learned re-ranker) and ``feedback`` (pseudo-relevance feedback)
through the real app and model."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from memory_service.memories.models import Memory, SearchHit
from memory_service.retrieval.features import FEATURES
from memory_service.retrieval.feedback import expansion_terms
from memory_service.retrieval.options import DEFAULT_RERANK
from memory_service.retrieval.ranker import MIN_POOL
from tests.conftest import assert_problem
from tests.test_retrieval import MEETING_NOISE, SEARCH, add_all, contents, search

TURNS = [
    "Anna: I adopted a grey cat named Pixel last week",
    "Ben: That is lovely, what does Pixel like to eat?",
    "Anna: Pixel loves tuna and chasing string",
    *MEETING_NOISE,
]
# the learned ranker weighs pools of at least MIN_POOL candidates: more to search
CHORES = [
    f"Reminder {i}: {task} on {day}"
    for i, (task, day) in enumerate(
        (task, day)
        for task in ("water the plants", "pay the rent", "call the plumber", "renew the permit",
                     "back up the laptop", "clean the garage")
        for day in ("Monday", "Wednesday", "Friday", "Sunday")
    )
]  # fmt: skip


CAT = "What is the name of Anna's cat?"
Ask = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def ask(client: Any, tenant: dict[str, Any]) -> Ask:
    """Searches for Anna's cat among ``TURNS`` (loaded once), k=3, with extra fields."""
    h = tenant["headers"]
    await add_all(client, h, [*TURNS, *CHORES], user_id="u")
    assert len(TURNS) + len(CHORES) >= MIN_POOL

    async def run(**extra: Any) -> dict[str, Any]:
        return await search(client, h, query=CAT, k=3, user_id="u", **extra)

    return run


async def test_learned_rerank_explains_each_feature(ask: Ask) -> None:
    body = await ask(rerank="learned", explain=True)
    assert body["strategy"].startswith("hybrid(") and body["strategy"].endswith("+learned")
    assert contents(body)[0] == TURNS[0]
    for hit in body["results"]:
        # the shares and the bias add up to the logit; the score is its probability
        assert set(hit["components"]) == {*FEATURES, "bias"}
        logit = sum(hit["components"].values())
        assert hit["score"] == pytest.approx(1.0 / (1.0 + math.exp(-logit)), abs=1e-5)
        assert 0.0 < hit["score"] < 1.0
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    again = await ask(rerank="learned")
    assert [(x["memory"]["id"], x["score"]) for x in again["results"]] == [
        (x["memory"]["id"], x["score"]) for x in body["results"]
    ]
    # "none" is the first stage alone: hybrid's own shares
    plain = await ask(rerank="none", explain=True)
    assert "+learned" not in plain["strategy"]
    assert set(plain["results"][0]["components"]) <= {"vector", "keyword", "time"}


async def test_feedback_searches_again_with_the_best_memories(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(client, h, TURNS, user_id="u")
    # "Pixel" is in no query word; the first round's best turn brings it in
    words = expansion_terms(
        "Anna's cat",
        [SearchHit(memory_like(TURNS[0]), 1.0), SearchHit(memory_like(TURNS[2]), 0.5)],
    )
    assert "pixel" in words and "cat" not in words and "anna" not in words
    for kind in ("rm3", "rocchio", "both"):
        body = await search(
            client, h, query="Anna's cat", k=3, user_id="u", mode="hybrid", feedback=kind
        )
        assert body["strategy"].endswith(f"+feedback({kind})")
        assert TURNS[0] in contents(body)
    plain = await search(client, h, query="Anna's cat", k=3, user_id="u", feedback="none")
    assert "+feedback" not in plain["strategy"]


def memory_like(content: str) -> Memory:
    now = datetime.now(UTC)
    return Memory("m", content, "u", None, None, None, {}, 0.5, now, now, None, 1)


async def test_a_search_naming_no_mode_gets_the_default_reranker(ask: Ask) -> None:
    default = await ask()
    assert DEFAULT_RERANK == "learned"
    assert default["strategy"].startswith("hybrid(")
    assert default["strategy"].endswith("+context(run_id)+learned")
    assert contents(default)[0] == TURNS[0]
    assert all(0.0 < hit["score"] < 1.0 for hit in default["results"])
    # the options that weigh scores keep the default ranking under them
    for extra in ({"diversity": 0.3}, {"recency_weight": 0.2}, {"group_by": "user_id"}):
        body = await ask(**extra)
        assert "+context(run_id)+learned" in body["strategy"] or "group_by" in extra, extra
        assert "+learned" in body["strategy"], extra
    # a named mode keeps its own scores, and so does "none"
    for extra in ({"mode": "hybrid"}, {"rerank": "none"}):
        body = await ask(**extra)
        assert "+learned" not in body["strategy"], extra
    vector = await ask(mode="vector")
    assert all(0.0 < hit["score"] <= 1.0 for hit in vector["results"])


async def test_learned_scores_weigh_with_recency_and_stay_one_relevance(ask: Ask) -> None:
    alone = await ask(rerank="learned")
    body = await ask(rerank="learned", recency_weight=0.2, explain=True)
    assert body["strategy"].endswith("+learned")
    learned = {x["memory"]["id"]: x["score"] for x in alone["results"]}
    for hit in body["results"]:
        parts = hit["components"]
        assert set(parts) == {"relevance", "recency"}  # the probability, weighed as one
        assert parts["relevance"] == pytest.approx(0.8 * learned[hit["memory"]["id"]], abs=1e-5)
        assert hit["score"] == pytest.approx(sum(parts.values()), abs=1e-5)


async def test_a_handful_of_memories_keeps_the_first_stage_order(
    client: Any, tenant: dict[str, Any]
) -> None:
    """Below MIN_POOL candidates the features relative to the pool say little: two
    memories, and the one both sides rank first stays first."""
    h = tenant["headers"]
    for fact in ("my favourite colour is teal", "I work as a nurse in Leeds"):  # one by one
        await add_all(client, h, [fact], user_id="u")
    body = await search(client, h, query="what is my job?", k=2, user_id="u", explain=True)
    assert contents(body)[0] == "I work as a nurse in Leeds"
    assert "+learned" not in body["strategy"]
    assert set(body["results"][0]["components"]) <= {"vector", "keyword", "time", "context"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"rerank": "bm25"}, "rerank"),
        ({"rerank": 1}, "rerank"),
        ({"rerank": "cross", "group_by": "run_id"}, "group_by"),
        ({"rerank": "cross", "diversity": 0.5}, "diversity"),
        ({"rerank": "cross", "recency_weight": 0.1}, "recency_weight"),
        ({"feedback": "rm4"}, "feedback"),
        ({"feedback": "rm3", "mode": "vector"}, "feedback"),
    ],
)
async def test_bad_rerank_is_a_problem(
    client: Any, tenant: dict[str, Any], extra: dict[str, Any], field: str
) -> None:
    r = await client.post(SEARCH, json={"query": "x", **extra}, headers=tenant["headers"])
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code, mentions=field)
