"""``rerank`` (the learned re-ranker) and ``feedback`` (pseudo-relevance feedback)
through the real app and model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from memory_service.memories.models import Memory, SearchHit
from memory_service.retrieval.features import FEATURES
from memory_service.retrieval.feedback import expansion_terms
from memory_service.retrieval.options import DEFAULT_RERANK
from tests.conftest import assert_problem
from tests.test_retrieval import MEETING_NOISE, SEARCH, add_all, contents, search

TURNS = [
    "Anna: I adopted a grey cat named Pixel last week",
    "Ben: That is lovely, what does Pixel like to eat?",
    "Anna: Pixel loves tuna and chasing string",
    *MEETING_NOISE,
]


async def test_learned_rerank_explains_each_feature(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await add_all(client, h, TURNS, user_id="u")
    query = "What is the name of Anna's cat?"
    body = await search(client, h, query=query, k=3, user_id="u", rerank="learned", explain=True)
    assert body["strategy"].startswith("hybrid(") and body["strategy"].endswith("+learned")
    assert contents(body)[0] == TURNS[0]
    for hit in body["results"]:
        assert set(hit["components"]) == {*FEATURES, "bias"}
        assert hit["score"] == pytest.approx(sum(hit["components"].values()), abs=1e-5)
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    again = await search(client, h, query=query, k=3, user_id="u", rerank="learned")
    assert [(x["memory"]["id"], x["score"]) for x in again["results"]] == [
        (x["memory"]["id"], x["score"]) for x in body["results"]
    ]
    # "none" is the first stage alone: hybrid's own shares
    plain = await search(client, h, query=query, k=3, user_id="u", rerank="none", explain=True)
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


async def test_a_search_naming_no_mode_gets_the_default_reranker(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(client, h, TURNS, user_id="u")
    query = "What is the name of Anna's cat?"
    default = await search(client, h, query=query, k=3, user_id="u")
    assert default["strategy"].startswith("hybrid(")
    assert default["strategy"].endswith("+learned") == (DEFAULT_RERANK == "learned")
    # a named mode keeps its own scores; so do share-weighing options and "none"
    for extra in ({"mode": "hybrid"}, {"rerank": "none"}, {"diversity": 0.3}):
        body = await search(client, h, query=query, k=3, user_id="u", **extra)
        assert "+learned" not in body["strategy"], extra
    vector = await search(client, h, query=query, k=3, user_id="u", mode="vector")
    assert all(0.0 < hit["score"] <= 1.0 for hit in vector["results"])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"rerank": "bm25"}, "rerank"),
        ({"rerank": 1}, "rerank"),
        ({"rerank": "learned", "group_by": "run_id"}, "group_by"),
        ({"rerank": "learned", "diversity": 0.5}, "diversity"),
        ({"rerank": "learned", "recency_weight": 0.1}, "recency_weight"),
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
