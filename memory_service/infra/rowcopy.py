"""Verbatim row copies: the generic SQL behind export, import, migration and rollback.

A table's owner module (``tasks``, ``environments``, ``memories.repository``)
declares which of its columns travel and calls these helpers with its own table
name; the helpers only copy, snapshot, restore or delete whole rows by id within
one tenant, and apply none of the owner's rules. A snapshot is ``to_jsonb`` of
the row, and a restore reads it back with ``jsonb_populate_record``, so every
column type (``vector`` included) round-trips through its own text form exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]


def _ids(ids: Sequence[str | uuid.UUID]) -> list[str]:
    return [str(i) for i in ids]


async def owners(
    conn: Conn, table: str, ids: Sequence[str | uuid.UUID]
) -> dict[str, uuid.UUID]:
    """Which tenant holds each of ``ids`` (ids held by nobody are absent)."""
    if not ids:
        return {}
    cur = await conn.execute(
        sql.SQL("SELECT id::text, tenant_id FROM {} WHERE id = ANY(%s::uuid[])").format(
            sql.Identifier(table)
        ),
        (_ids(ids),),
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def insert_rows(
    conn: Conn,
    table: str,
    tenant_id: uuid.UUID,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> set[str]:
    """Insert rows as given (``columns`` must start with ``id``); the ids inserted.

    A row that meets any unique key already taken is skipped, not an error: the
    caller compares the ids it sent with the ids returned.
    """
    if not rows:
        return set()
    statement = sql.SQL(
        "INSERT INTO {table} (tenant_id, {cols}) VALUES (%s, {vals}) "
        "ON CONFLICT DO NOTHING RETURNING id::text"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    inserted: set[str] = set()
    async with conn.cursor() as cur:
        await cur.executemany(statement, [(tenant_id, *row) for row in rows], returning=True)
        while True:
            row = await cur.fetchone()
            if row is not None:
                inserted.add(row[0])
            if not cur.nextset():
                break
    return inserted


async def snapshot(
    conn: Conn, table: str, tenant_id: uuid.UUID, ids: Sequence[str | uuid.UUID]
) -> dict[str, dict[str, Any]]:
    """The whole rows as JSON objects, by id, locked until the transaction ends."""
    if not ids:
        return {}
    cur = await conn.execute(
        sql.SQL(
            "SELECT t.id::text, to_jsonb(t.*) FROM {} t "
            "WHERE t.tenant_id = %s AND t.id = ANY(%s::uuid[]) FOR UPDATE"
        ).format(sql.Identifier(table)),
        (tenant_id, _ids(ids)),
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def restore(
    conn: Conn,
    table: str,
    tenant_id: uuid.UUID,
    columns: Sequence[str],
    backups: Sequence[dict[str, Any]],
) -> int:
    """Put ``columns`` of each row back to its snapshot; rows deleted since stay deleted."""
    if not backups:
        return 0
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    picked = sql.SQL(", ").join(sql.Identifier("r", c) for c in columns)
    statement = sql.SQL(
        "UPDATE {table} t SET ({cols}) = (SELECT {picked} FROM "
        "jsonb_populate_record(NULL::{table}, %s) r) WHERE t.tenant_id = %s AND t.id = %s"
    ).format(table=sql.Identifier(table), cols=cols, picked=picked)
    restored = 0
    async with conn.cursor() as cur:
        for backup in backups:
            await cur.execute(statement, (Jsonb(backup), tenant_id, backup["id"]))
            restored += cur.rowcount
    return restored


async def delete(
    conn: Conn, table: str, tenant_id: uuid.UUID, ids: Sequence[str | uuid.UUID]
) -> int:
    if not ids:
        return 0
    cur = await conn.execute(
        sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND id = ANY(%s::uuid[])").format(
            sql.Identifier(table)
        ),
        (tenant_id, _ids(ids)),
    )
    return cur.rowcount


async def update_rows(
    conn: Conn,
    table: str,
    tenant_id: uuid.UUID,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> int:
    """Overwrite ``columns`` (``id`` first, used as the key) of existing rows."""
    if not rows:
        return 0
    statement = sql.SQL("UPDATE {table} SET {sets} WHERE tenant_id = %s AND id = %s").format(
        table=sql.Identifier(table),
        sets=sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns[1:]
        ),
    )
    async with conn.cursor() as cur:
        await cur.executemany(statement, [(*row[1:], tenant_id, row[0]) for row in rows])
        return cur.rowcount


async def read_page(
    conn: Conn,
    table: str,
    tenant_id: uuid.UUID,
    columns: Sequence[str],
    after_seq: int,
    limit: int,
    *,
    where: sql.Composable | None = None,
) -> list[tuple[Any, ...]]:
    """Rows in ``seq`` order after ``after_seq``: ``(seq, *columns)`` tuples."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT seq, {cols} FROM {table} WHERE tenant_id = %s AND seq > %s AND {where} "
            "ORDER BY seq LIMIT %s"
        ).format(
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            table=sql.Identifier(table),
            where=where if where is not None else sql.SQL("TRUE"),
        ),
        (tenant_id, after_seq, limit),
    )
    return list(await cur.fetchall())
