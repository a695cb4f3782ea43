"""Small helpers shared by tests: random unit vectors and paging through a listing."""

from __future__ import annotations

from typing import Any

import numpy as np

DIM = 384


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def page_all(client: Any, headers: dict[str, str], params: dict[str, Any]) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        r = await client.get("/v1/memories", params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items
