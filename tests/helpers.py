"""Small helpers shared by tests: random unit vectors, paging through a listing, reading
rows straight from the database, a runtime that has finished starting, and waiting (with
a deadline) for another process to see a change."""

from __future__ import annotations

import asyncio
import time
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


PROPAGATION_DEADLINE_S = 5.0
"""How long a test waits for another process to see a change. The service catches up
within about a second (``faiss_poll_interval_s`` 0.5 s, or at once on a notification);
five leave room for a loaded CI machine. How fast it really is, is a benchmark's
business, not a test's."""


async def eventually(check: Any, what: str, deadline: float = PROPAGATION_DEADLINE_S) -> float:
    """Poll ``check`` (an async predicate) until it holds; the seconds that took."""
    started = time.monotonic()
    while not await check():
        waited = time.monotonic() - started
        assert waited < deadline, f"{what}: not seen within {deadline} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def until(condition: Any, timeout: float, what: str) -> Any:
    """Poll ``condition`` (an async function) until it returns something truthy; that."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
