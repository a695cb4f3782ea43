"""Cursor pagination returns every row exactly once, also while rows are being inserted."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import unit_vectors


async def test_every_row_exactly_once_during_inserts(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(120, seed=31)
    first = [{"content": f"old {i}", "user_id": "p", "embedding": vecs[i].tolist()} for i in range(60)]
    r = await client.post("/v1/memories/batch", json={"items": first}, headers=h)
    assert r.status_code == 201
    original = {m["id"] for m in r.json()["items"]}

    async def insert_more() -> None:
        for i in range(60, 120):
            r = await client.post(
                "/v1/memories",
                json={"content": f"new {i}", "user_id": "p", "embedding": vecs[i].tolist()},
                headers=h,
            )
            assert r.status_code == 201
            await asyncio.sleep(0)

    async def page() -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"user_id": "p", "limit": 7}
            if cursor:
                params["cursor"] = cursor
            body = (await client.get("/v1/memories", params=params, headers=h)).json()
            seen += [m["id"] for m in body["items"]]
            cursor = body["next_cursor"]
            await asyncio.sleep(0)
            if not cursor:
                return seen

    seen, _ = await asyncio.gather(page(), insert_more())
    assert len(seen) == len(set(seen)), "a row came back twice"
    assert original <= set(seen), "a row that existed before paging was missed"


async def test_last_page_has_no_cursor(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(4, seed=4)
    items = [{"content": f"m{i}", "embedding": vecs[i].tolist()} for i in range(4)]
    await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    r = (await client.get("/v1/memories", params={"limit": 4}, headers=h)).json()
    assert len(r["items"]) == 4 and r["next_cursor"] is None
    r = (await client.get("/v1/memories", params={"limit": 2}, headers=h)).json()
    assert len(r["items"]) == 2 and r["next_cursor"]
