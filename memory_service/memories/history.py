"""SQL of ``memory_history`` (and ``erasure_audit``): the only module that has it.

A trigger on ``memories`` writes the history rows; here they are read (a memory's
history, an export's histories), replaced (an import carries them verbatim) and
erased (a purge keeps only the fact that it happened, in ``erasure_audit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from memory_service.memories.models import HistoryEntry

Conn = AsyncConnection[Any]


async def erase_history(conn: Conn, tenant_id: uuid.UUID, memory_ids: Sequence[str]) -> int:
    """Purge: drop the history rows of these memories; returns how many went."""
    cur = await conn.execute(
        "DELETE FROM memory_history WHERE tenant_id = %s AND memory_id = ANY(%s::uuid[])",
        (tenant_id, list(memory_ids)),
    )
    return cur.rowcount


async def record_erasure(conn: Conn, tenant_id: uuid.UUID, kind: str, memories: int) -> None:
    """What stays of a purge: that it happened, when, by id or by scope, and how many
    memories; no content, metadata or ids."""
    await conn.execute(
        "INSERT INTO erasure_audit (tenant_id, kind, memories) VALUES (%s, %s, %s)",
        (tenant_id, kind, memories),
    )


async def replace_history(
    conn: Conn, tenant_id: uuid.UUID, memory_id: str, entries: Sequence[HistoryEntry]
) -> None:
    """Replace a memory's history with ``entries`` (an import carries it verbatim)."""
    await conn.execute(
        "DELETE FROM memory_history WHERE tenant_id = %s AND memory_id = %s",
        (tenant_id, memory_id),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO memory_history (tenant_id, memory_id, event, old_content, new_content, "
            "old_metadata, new_metadata, at, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (tenant_id, memory_id, e.event, e.old_content, e.new_content,
                 None if e.old_metadata is None else Jsonb(e.old_metadata),
                 None if e.new_metadata is None else Jsonb(e.new_metadata), e.at, e.version)
                for e in entries
            ],
        )


async def histories(
    conn: Conn, tenant_id: uuid.UUID, memory_ids: Sequence[str]
) -> dict[str, list[HistoryEntry]]:
    """The history of each of ``memory_ids``, oldest first (an export's optional part)."""
    cur = await conn.execute(
        "SELECT memory_id::text, event, old_content, new_content, old_metadata, new_metadata, "
        "at, version FROM memory_history WHERE tenant_id = %s AND memory_id = ANY(%s::uuid[]) "
        "ORDER BY id",
        (tenant_id, list(memory_ids)),
    )
    out: dict[str, list[HistoryEntry]] = {}
    for row in await cur.fetchall():
        out.setdefault(row[0], []).append(HistoryEntry(*row[1:]))
    return out


async def history(conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID) -> list[HistoryEntry]:
    cur = await conn.execute(
        "SELECT event, old_content, new_content, old_metadata, new_metadata, at, version "
        "FROM memory_history WHERE tenant_id = %s AND memory_id = %s ORDER BY id",
        (tenant_id, memory_id),
    )
    return [HistoryEntry(*row) for row in await cur.fetchall()]
