"""Small helpers shared by tests: random unit vectors, paging through a listing, reading
rows straight from the database, and a runtime that has finished starting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

if TYPE_CHECKING:
    from memory_service.runtime import Runtime

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


def db_rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query on a connection of its own (vectors come back as pgvector's type)."""
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        return conn.execute(query, params).fetchall()


async def settled(runtime: Runtime) -> Runtime:
    """``runtime`` once it holds what it holds at start (every tenant of the session's
    database): what another process promises to catch up within is a running process."""
    assert runtime.hot_search is not None and await runtime.hot_search.wait_ready(120)
    return runtime
