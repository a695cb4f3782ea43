"""What the in-process indexes load and re-check: ``memories`` rows addressed by seq.

Part of the memories repository (see ``__init__.py``), which re-exports every
function here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import Memory, Scope
from memory_service.memories.repository.base import (
    COLUMNS,
    Conn,
    fetch_rows,
    query,
    where_clause,
)
from memory_service.memories.rows import VectorRows, row_to_memory, stack_rows


async def tenant_sizes(conn: Conn) -> dict[uuid.UUID, int]:
    cur = await conn.execute("SELECT tenant_id, count(*) FROM memories GROUP BY tenant_id")
    return {r[0]: int(r[1]) for r in await cur.fetchall()}


async def tenant_size(conn: Conn, tenant_id: uuid.UUID) -> int:
    cur = await conn.execute("SELECT count(*) FROM memories WHERE tenant_id = %s", (tenant_id,))
    return int((await cur.fetchone() or (0,))[0])


async def current_versions(
    conn: Conn, tenant_id: uuid.UUID, memory_seqs: Sequence[int]
) -> dict[int, int]:
    """seq -> version of the rows among ``memory_seqs`` that still exist."""
    cur = await conn.execute(query("current_versions"), (tenant_id, list(memory_seqs)))
    return {int(r[0]): int(r[1]) for r in await cur.fetchall()}


async def current_rows(
    conn: Conn, tenant_id: uuid.UUID, memory_seqs: Sequence[int], dimension: int
) -> VectorRows:
    """The rows among ``memory_seqs`` that still exist, with their current embedding."""
    statement = query("rows_by_seq").format(cols=COLUMNS)
    rows = await fetch_rows(conn, statement, (tenant_id, list(memory_seqs)))
    return stack_rows(rows, dimension)


async def stream_tenant_rows(
    conn: Conn, tenant_id: uuid.UUID, dimension: int, *, vectors: bool = True
) -> AsyncGenerator[VectorRows, None]:
    """Every row of a tenant in batches (with embeddings unless not ``vectors``). A
    client-side cursor: a load cancelled at shutdown leaves no server cursor behind, and
    a tenant that fits the memory budget fits the client while it loads."""
    cols = COLUMNS + sql.SQL(", m.embedding") if vectors else COLUMNS
    statement = sql.SQL("SELECT {} FROM memories m WHERE m.tenant_id = %s").format(cols)
    async with conn.cursor(binary=True, row_factory=dict_row) as cur:
        await cur.execute(statement, (tenant_id,))
        while rows := await cur.fetchmany(10_000):
            yield stack_rows(rows, dimension)


async def changed_rows(
    conn: Conn, tenant_id: uuid.UUID, after_change: int, dimension: int
) -> tuple[VectorRows, set[int]]:
    """Rows of the tenant changed after change-log position ``after_change``, as they are
    now, and the seqs among them that are gone: one statement over the log and the table."""
    rows = await fetch_rows(
        conn, query("changed_since").format(cols=COLUMNS), (tenant_id, after_change, tenant_id)
    )
    live = [r for r in rows if r["seq"] is not None]
    gone = {int(r["changed_seq"]) for r in rows if r["seq"] is None}
    return stack_rows(live, dimension), gone


async def get_many_by_seq(
    conn: Conn, tenant_id: uuid.UUID, seqs: Sequence[int], scope: Scope, flt: CompiledFilter | None
) -> dict[int, Memory]:
    """Visible rows among ``seqs`` that still match tenant, scope and filter."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params.append(list(seqs))
    statement = sql.SQL("SELECT {} FROM memories m WHERE {} AND m.seq = ANY(%s)")
    rows = await fetch_rows(conn, statement.format(COLUMNS, where), params)
    return {int(r["seq"]): row_to_memory(r) for r in rows}


async def matching_seqs(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, limit: int
) -> list[int]:
    """Seqs of the visible rows that match, at most ``limit`` of them."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params.append(limit)
    cur = await conn.execute(
        sql.SQL("SELECT m.seq FROM memories m WHERE {} LIMIT %s").format(where), params
    )
    return [int(r[0]) for r in await cur.fetchall()]
