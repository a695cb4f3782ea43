"""The end-to-end path: a tenant adds memories and finds one by meaning."""

from __future__ import annotations

from typing import Any


async def test_semantic_search_finds_breakfast_drink(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for text in [
        "I drink a double espresso every morning",
        "My sister lives in Lisbon",
        "The quarterly report is due on Friday",
        "I am allergic to peanuts",
        "Our team uses PostgreSQL for storage",
    ]:
        r = await client.post("/v1/memories", json={"content": text, "user_id": "alice"}, headers=h)
        assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/memories/search",
        json={"query": "what does the user drink at breakfast?", "k": 3, "user_id": "alice"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["memory"]["content"] == "I drink a double espresso every morning"
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 3
