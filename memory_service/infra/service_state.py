"""SQL of ``service_state``: the small named values the service keeps in its database.

Migrations create the rows (the cursor signing key, the embedding dimension,
how far the change log was pruned); the running service reads them and moves
the prune mark forward through here.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from memory_service.infra.db import wrap_db_errors

Conn = AsyncConnection[Any]


async def read(conn: Conn, name: str) -> str | None:
    cur = await conn.execute("SELECT value FROM service_state WHERE name = %s", (name,))
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def raise_to(conn: Conn, name: str, value: int) -> None:
    """Move an integer value forward to ``value``; never backwards."""
    await conn.execute(
        "UPDATE service_state SET value = greatest(value::bigint, %s)::text WHERE name = %s",
        (value, name),
    )


async def cursor_key(pool: AsyncConnectionPool) -> bytes:
    """The key that signs pagination cursors (created by the first migration)."""
    async with wrap_db_errors(), pool.connection() as conn:
        value = await read(conn, "cursor_key")
    if value is None:
        raise RuntimeError("the database has no cursor key: run `memory-service migrate`")
    return value.encode()
