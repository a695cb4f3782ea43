"""Keyword, hybrid, scoring and diversity search through the real app and model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import assert_problem

SEARCH = "/v1/memories/search"


async def add_all(
    client: Any, headers: dict[str, str], texts: list[str], **fields: Any
) -> list[str]:
    items = [{"content": t, **fields} for t in texts]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=headers)
    assert r.status_code == 201, r.text
    return [m["id"] for m in r.json()["items"]]


async def search(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(SEARCH, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def contents(body: dict[str, Any]) -> list[str]:
    return [hit["memory"]["content"] for hit in body["results"]]


# past the model's 256-token window: only the keyword index sees the last sentence
RARE = " ".join(["Tomatoes need full sun, deep watering and a trellis to climb."] * 25) + (
    " The storage unit passphrase is quokka-marmalade."
)
MEETING_NOISE = [
    "The weekly meeting moved to Tuesday afternoon",
    "Meeting notes: discuss the budget and the hiring plan",
    "Remember to book a room for the team meeting",
    "The client meeting went well and they liked the demo",
    "Prepare slides before the board meeting",
    "The meeting invite was sent to everyone on the team",
]
SECRETS_NOISE = [
    "The gym locker combination is written on a sticky note",
    "Passwords are kept in the password manager",
]
PARAPHRASE = "Every morning I have a double espresso"


async def test_hybrid_finds_rare_name_that_vector_misses(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(client, h, [RARE, *MEETING_NOISE, *SECRETS_NOISE], user_id="u")
    query = "what is the passphrase quokka-marmalade for?"
    vector = await search(client, h, query=query, k=3, user_id="u", mode="vector")
    hybrid = await search(client, h, query=query, k=3, user_id="u", mode="hybrid")
    keyword = await search(client, h, query=query, k=3, user_id="u", mode="keyword")
    # no mode: hybrid, then the learned ranker
    default = await search(client, h, query=query, k=3, user_id="u")
    assert RARE not in contents(vector)
    assert contents(default)[0] == RARE and default["strategy"].startswith("hybrid")
    assert contents(keyword)[0] == RARE
    assert RARE in contents(hybrid)
    assert len(hybrid["results"]) == 3
    assert hybrid["strategy"].startswith("hybrid")


async def test_hybrid_finds_paraphrase_that_keyword_misses(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(client, h, [PARAPHRASE, *MEETING_NOISE], user_id="u")
    query = "which beverage does the user drink at breakfast?"
    keyword = await search(client, h, query=query, k=3, user_id="u", mode="keyword")
    hybrid = await search(client, h, query=query, k=3, user_id="u", mode="hybrid")
    assert PARAPHRASE not in contents(keyword)
    assert contents(hybrid)[0] == PARAPHRASE


async def test_keyword_mode_obeys_scope_filter_and_returns_matches_only(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(
        client,
        h,
        ["apple pie recipe", "apple orchard visit"],
        user_id="a",
        metadata={"kind": "food"},
    )
    await add_all(client, h, ["apple stock price"], user_id="a", metadata={"kind": "money"})
    await add_all(client, h, ["apple tart in another scope"], user_id="b")
    await add_all(client, other_tenant["headers"], ["apple of another tenant"], user_id="a")
    body = await search(client, h, query="apple", k=10, user_id="a", mode="keyword")
    assert sorted(contents(body)) == [
        "apple orchard visit",
        "apple pie recipe",
        "apple stock price",
    ]
    body = await search(
        client,
        h,
        query="apples",
        k=2,
        user_id="a",
        mode="keyword",
        filter={"metadata.kind": "food"},
    )
    assert sorted(contents(body)) == ["apple orchard visit", "apple pie recipe"]
    body = await search(client, h, query="banana", k=5, user_id="a", mode="keyword")
    assert body["results"] == []


async def test_keyword_finds_non_english_text(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await add_all(
        client,
        h,
        [
            "Der Hund schläft im Garten unter dem Apfelbaum",
            "Le chat dort sur le canapé du salon",
            "Η γάτα κοιμάται στον καναπέ",
            "The dog sleeps in the garden",
        ],
        user_id="u",
    )
    for query, expected in [
        ("Apfelbaum", "Der Hund schläft im Garten unter dem Apfelbaum"),
        ("canapé", "Le chat dort sur le canapé du salon"),
        ("καναπέ", "Η γάτα κοιμάται στον καναπέ"),
    ]:
        body = await search(client, h, query=query, k=2, user_id="u", mode="keyword")
        assert contents(body) == [expected], (query, body)


async def test_explain_components_add_up_to_the_score(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await add_all(client, h, [PARAPHRASE, RARE, *MEETING_NOISE], user_id="u", importance=0.3)
    for mode in ("vector", "keyword", "hybrid"):
        for extra in ({}, {"recency_weight": 0.2, "importance_weight": 0.3}):
            body = await search(
                client,
                h,
                query="meeting about the invoice",
                k=5,
                user_id="u",
                mode=mode,
                explain=True,
                **extra,
            )
            assert body["results"], (mode, extra)
            for hit in body["results"]:
                parts = hit["components"]
                assert abs(sum(parts.values()) - hit["score"]) < 1e-5, (mode, extra, hit)
                if extra:
                    assert abs(parts["importance"] - 0.3 * 0.3) < 1e-6
                    assert 0.0 < parts["recency"] <= 0.2
            scores = [hit["score"] for hit in body["results"]]
            assert scores == sorted(scores, reverse=True)
    plain = await search(client, h, query="meeting", k=2, user_id="u")
    assert all("components" not in hit for hit in plain["results"])


async def test_importance_and_recency_reorder_results(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for text, importance in [("note about lunch plans", 0.1), ("note about lunch menu", 0.9)]:
        r = await client.post(
            "/v1/memories",
            json={"content": text, "user_id": "u", "importance": importance},
            headers=h,
        )
        assert r.status_code == 201
    body = await search(
        client, h, query="note about lunch", k=2, user_id="u", importance_weight=1.0
    )
    assert contents(body) == ["note about lunch menu", "note about lunch plans"]
    # a half-life of 3.6 seconds makes the newer memory win
    body = await search(
        client,
        h,
        query="note about lunch",
        k=2,
        user_id="u",
        recency_weight=1.0,
        half_life_hours=0.001,
        explain=True,
    )
    assert contents(body)[0] == "note about lunch menu"


async def test_diversity_drops_near_duplicates(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    copies = [
        "I love drinking espresso coffee",
        "I really love drinking espresso coffee",
        "I love drinking espresso coffee a lot",
    ]
    others = ["Green tea is my afternoon drink", "Hot chocolate is nice in winter"]
    await add_all(client, h, copies + others, user_id="u")
    plain = await search(client, h, query="what coffee do I drink", k=3, user_id="u")
    assert set(contents(plain)) == set(copies)
    diverse = await search(
        client, h, query="what coffee do I drink", k=3, user_id="u", diversity=0.7
    )
    found = contents(diverse)
    assert len(found) == 3
    assert sum(text in copies for text in found) == 1
    assert diverse["strategy"].endswith("+mmr")
    scores = [hit["score"] for hit in diverse["results"]]
    assert scores == sorted(scores, reverse=True)


async def test_hybrid_returns_exactly_k_when_k_match(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await add_all(client, h, MEETING_NOISE, user_id="u")
    body = await search(client, h, query="zebra crossing", k=5, user_id="u", mode="hybrid")
    assert len(body["results"]) == 5
    body = await search(
        client,
        h,
        query="zebra crossing",
        k=50,
        user_id="u",
        mode="hybrid",
        diversity=0.3,
        recency_weight=0.1,
    )
    assert len(body["results"]) == len(MEETING_NOISE)


async def test_bad_search_options_are_problems(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"query": "x", "diversity": 1.5}, "diversity"),
        ({"query": "x", "boost": 2}, "boost"),
        ({"query": "x", "mode": "vector", "rrf_k": 10}, "rrf_k"),
        ({"query": "x", "mode": "keyword", "vector_weight": 1}, "vector_weight"),
        ({"query": "x", "recency_weight": 0.7, "importance_weight": 0.6}, "recency_weight"),
        ({"query": "x", "half_life_hours": 0}, "half_life_hours"),
        ({"query": "x", "mode": "hybrid", "vector_weight": 0, "keyword_weight": 0}, "weight"),
        ({"embedding": [0.1] * 384, "mode": "keyword"}, "query"),
        ({"embedding": [0.1] * 384, "mode": "hybrid"}, "query"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
    ]
    for body, mentions in cases:
        r = await client.post(SEARCH, json=body, headers=h)
        assert r.status_code in (400, 422), (body, r.text)
        assert_problem(r, r.status_code, mentions=mentions)


async def test_openapi_documents_the_search_options(client: Any) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    text = r.text
    for name in ("recency_weight", "importance_weight", "diversity", "rrf_k", "explain"):
        assert name in text
    assert "(1 - w_r - w_i) * relevance" in text
    assert "/v1/settings" in text


async def test_a_search_that_names_no_mode_gets_the_best_ranking(
    client: Any, tenant: dict[str, Any]
) -> None:
    """No mode: hybrid for query text (the best ranking by `make eval`), vector for an
    embedding alone (hybrid needs words), vector under ``as_of``; and the OpenAPI
    document says so."""
    h = tenant["headers"]
    await add_all(client, h, [RARE, *MEETING_NOISE], user_id="u")
    text = await search(client, h, query="quokka-marmalade passphrase", k=2, user_id="u")
    assert text["strategy"].startswith("hybrid") and contents(text)[0] == RARE
    vector = (await client.post(
        SEARCH, json={"query": "quokka", "k": 1, "user_id": "u", "mode": "vector", "explain": True},
        headers=h,
    )).json()
    embedding = await client.get(
        f"/v1/memories/{vector['results'][0]['memory']['id']}?include=embedding", headers=h
    )
    alone = await client.post(
        SEARCH, json={"embedding": embedding.json()["embedding"], "k": 1, "user_id": "u"}, headers=h
    )
    assert alone.status_code == 200, alone.text
    assert not alone.json()["strategy"].startswith("hybrid")
    past = await client.post(
        SEARCH, json={"query": "quokka", "k": 1, "as_of": "2100-01-01T00:00:00Z"}, headers=h
    )
    assert past.status_code == 200, past.text
    schema = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]["SearchBody"]
    assert "MEMORY_SEARCH_DEFAULT_MODE" in str(schema["properties"]["mode"])


async def test_hybrid_fuses_scores_by_default_and_ranks_on_request(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    await add_all(client, h, [RARE, *SECRETS_NOISE, *MEETING_NOISE], user_id="u")
    query = "storage unit passphrase quokka-marmalade"
    bodies = {}
    for fusion in ("scores", "rrf"):
        body = await search(
            client, h, query=query, k=5, user_id="u", mode="hybrid", fusion=fusion, explain=True
        )
        bodies[fusion] = body
        for hit in body["results"]:
            assert hit["score"] == pytest.approx(sum(hit["components"].values()), abs=1e-5)
        scores = [hit["score"] for hit in body["results"]]
        assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-6
    assert contents(bodies["scores"])[0] == RARE
    # the keyword side's best match gets that side's whole weight, 1.5 of 1 + 1.5
    top = bodies["scores"]["results"][0]["components"]
    assert top["keyword"] == pytest.approx(1.5 / 2.5, abs=1e-5)
    assert 0.0 <= top["vector"] <= 1.0 / 2.5 + 1e-6
    ranks = bodies["rrf"]["results"]
    implied = await search(client, h, query=query, k=5, user_id="u", mode="hybrid", rrf_k=60)
    assert [r["score"] for r in implied["results"]] == [r["score"] for r in ranks]


async def test_bad_fusion_is_a_problem(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for body, mentions in [
        ({"mode": "hybrid", "fusion": "borda"}, "fusion"),
        ({"mode": "hybrid", "fusion": "scores", "rrf_k": 10}, "rrf_k"),
        ({"mode": "vector", "fusion": "rrf"}, "fusion"),
    ]:
        r = await client.post(SEARCH, json={"query": "x", **body}, headers=h)
        assert r.status_code in (400, 422), (body, r.text)
        assert_problem(r, r.status_code, mentions=mentions)
