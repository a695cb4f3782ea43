"""``"rerank": "cross"``: a one-layer cross-encoder fine-tuned here, in seconds, from the
packaged MiniLM by the training script's own steps, served by the real app; and the 422
of a service that has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from benchmarks.train_cross_encoder import build_model, save, train
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.retrieval.cross_encoder import CrossEncoderRanker
from tests.conftest import assert_problem, new_tenant
from tests.test_retrieval import MEETING_NOISE, SEARCH, add_all, contents, search

TURNS = [
    "Anna: I adopted a grey cat named Pixel last week",
    "Ben: That is lovely, what does Pixel like to eat?",
    "Anna: Pixel loves tuna and chasing string",
    *MEETING_NOISE,
]
QUERY = "What does Pixel like to eat?"
ANSWER = TURNS[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Taught that the tuna turn, not the question that echoes the words, answers."""
    questions = [QUERY, "What food does Anna's cat eat?", "What does Pixel eat?"]
    pairs = [(q, ANSWER, 1.0) for q in questions] * 4
    pairs += [(q, t, 0.0) for q in questions for t in (TURNS[0], TURNS[1], TURNS[3])]
    model = build_model(layers=1, max_length=32)
    losses = train(model, pairs, epochs=4, batch_size=8, rate=1e-3, progress=False)
    assert losses[-1] < losses[0]
    out = tmp_path_factory.mktemp("cross-encoder") / "model"
    save(model, out, {"layers": 1})
    return out


async def test_without_a_model_cross_is_a_422_saying_how_to_build_one(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    r = await client.post(SEARCH, json={"query": QUERY, "rerank": "cross"}, headers=h)
    body = assert_problem(r, 422, mentions="make train-cross-encoder")
    assert "MEMORY_CROSS_ENCODER_PATH" in body["detail"]
    r = await client.post(
        SEARCH, json={"query": QUERY, "rerank": "cross", "diversity": 0.3}, headers=h
    )
    assert_problem(r, 422, mentions="diversity")


async def test_cross_rescores_the_first_hits_and_explains_its_score(
    client: Any,
    settings: Settings,
    database_url: str,
    real_embedder: Embedder,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    tenant = await new_tenant(client)
    h = tenant["headers"]
    await add_all(client, h, TURNS, user_id="u")
    served = settings.with_(
        database_url=database_url,
        data_dir=str(tmp_path / "cross"),
        cross_encoder_path=str(tiny_model),
        cross_encoder_candidates=4,
    )
    ranker = CrossEncoderRanker(tiny_model, candidates=4)
    async with AsyncTestClient(app=create_app(served, embedder=real_embedder), timeout=60) as c:
        plain = await search(c, h, query=QUERY, k=6, user_id="u", mode="hybrid", explain=True)
        body = await search(
            c, h, query=QUERY, k=6, user_id="u", mode="hybrid", rerank="cross", explain=True
        )
        r = await c.post(SEARCH, json={"embedding": [0.1] * 384, "rerank": "cross"}, headers=h)
        assert_problem(r, 422, mentions="query")
    assert body["strategy"].endswith("+cross"), body["strategy"]
    # the fused order puts the echoing question first; the model knows better
    assert contents(plain)[0] != ANSWER and contents(body)[0] == ANSWER
    head, tail = body["results"][:4], body["results"][4:]
    assert sorted(contents(body)[:4]) == sorted(contents(plain)[:4])  # only the first 4
    assert contents(body)[4:] == contents(plain)[4:]
    expected = ranker.scores(QUERY, [hit["memory"]["content"] for hit in head])
    first_stage = {x["memory"]["id"]: x["score"] for x in plain["results"]}
    for hit, logit in zip(head, expected, strict=True):
        assert set(hit["components"]) == {"cross", "first_stage"}
        assert hit["components"]["cross"] == pytest.approx(logit, abs=1e-4)
        assert hit["score"] == pytest.approx(hit["components"]["cross"], abs=1e-5)
        # the fused score of a deeper first stage (a pool of 100, not 6): equal up to noise
        assert hit["components"]["first_stage"] == pytest.approx(
            first_stage[hit["memory"]["id"]], abs=1e-3
        )
    for hit in tail:
        assert set(hit["components"]) == {"first_stage"}
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
