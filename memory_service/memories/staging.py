"""The staging table a batch of new memories is streamed into with ``COPY``.

A batch insert sends its rows to a temporary table (one per connection, emptied
at commit) through PostgreSQL's binary ``COPY``, which is one stream instead of a
statement per row; ``memories.repository.insert_staged`` then moves them into
``memories`` with one ``INSERT ... SELECT`` that applies the table's own rules
(duplicates, constraints). This module owns the staging table's SQL and nothing
else; each staged row carries its position in the batch and the id it will get.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]

TABLE = "memories_staging"
# (name, type) in COPY order; the embedding's dimension is checked on the way into memories
COLUMNS = (
    ("ord", "int4"), ("id", "uuid"), ("content", "text"), ("content_hash", "bytea"),
    ("user_id", "text"), ("agent_id", "text"), ("run_id", "text"), ("namespace", "text"),
    ("metadata", "jsonb"), ("importance", "float4"), ("embedding", "vector"),
    ("expires_at", "timestamptz"), ("context", "text"), ("key", "text"),
)
_CREATE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS memories_staging ("
    + ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COPY = (
    "COPY memories_staging (" + ", ".join(name for name, _ in COLUMNS) + ") FROM STDIN (FORMAT BINARY)"
)


def _row(ord_: int, memory_id: uuid.UUID, item: dict[str, Any]) -> tuple[Any, ...]:
    s = item["scope"]
    head = (ord_, memory_id, item["content"], item["content_hash"])
    scope = (s.user_id, s.agent_id, s.run_id, s.namespace)
    tail = (Jsonb(item["metadata"]), item["importance"], item["embedding"], item["expires_at"])
    return (*head, *scope, *tail, item.get("context"), item.get("key"))


async def stage(conn: Conn, items: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """Stream ``items`` into the staging table (inside the caller's transaction);
    returns the id each will get, in order."""
    await conn.execute("SET LOCAL client_min_messages = warning")  # no 'already exists' notice
    await conn.execute(_CREATE)
    ids = [uuid.uuid4() for _ in items]
    async with conn.cursor().copy(_COPY) as copy:
        copy.set_types([kind for _, kind in COLUMNS])
        for i, (memory_id, item) in enumerate(zip(ids, items, strict=True)):
            await copy.write_row(_row(i, memory_id, item))
    return ids
