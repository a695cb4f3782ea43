"""SQL of the change log (``memory_changes``) that the in-process indexes follow.

Every committed write of a memory appends a row here (a trigger of migration
0002) naming the tenant and the memory's ``seq`` (a stable bigint per memory,
also the FAISS id) and notifies the ``memory_changes`` channel. The rows
themselves are read through ``memories.repository``. A purge adds a ``purge`` row
of its own (migration 0063) beside the delete's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from memory_service.infra import service_state

Conn = AsyncConnection[Any]
CHANNEL = "memory_changes"
PRUNED_THROUGH = "memory_changes_pruned_through"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    tenant_id: uuid.UUID
    memory_seq: int
    op: str


async def last_change(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM memory_changes")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def settled_mark(conn: Conn, older_than_s: float) -> int:
    """The last change older than ``older_than_s`` (no rolled-back gap can precede it);
    with no settled row yet (a new or freshly pruned log), just before the oldest."""
    cur = await conn.execute(
        "SELECT coalesce(max(seq) FILTER (WHERE at < now() - make_interval(secs => %s)), "
        "min(seq) - 1, 0) FROM memory_changes",
        (older_than_s,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def pruned_through(conn: Conn) -> int:
    value = await service_state.read(conn, PRUNED_THROUGH)
    return int(value) if value is not None else 0


async def changes_after(conn: Conn, after: int, limit: int) -> list[Change]:
    cur = await conn.execute(
        "SELECT seq, tenant_id, memory_seq, op FROM memory_changes WHERE seq > %s "
        "ORDER BY seq LIMIT %s",
        (after, limit),
    )
    return [Change(int(r[0]), r[1], int(r[2]), r[3]) for r in await cur.fetchall()]


async def prune_changes(conn: Conn, older_than_s: float) -> int:
    """Drop log rows older than the retention; records how far the log was cut."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH gone AS (DELETE FROM memory_changes "
            "WHERE at < now() - make_interval(secs => %s) RETURNING seq) "
            "SELECT coalesce(max(seq), 0), count(*) FROM gone",
            (older_than_s,),
        )
        row = await cur.fetchone()
        through, count = (int(row[0]), int(row[1])) if row else (0, 0)
        if through:
            await service_state.raise_to(conn, PRUNED_THROUGH, through)
    return count


async def tenant_changes_after(conn: Conn, tenant_id: uuid.UUID, after: int) -> set[int]:
    """Memory seqs of one tenant that changed after log position ``after``."""
    cur = await conn.execute(
        "SELECT DISTINCT memory_seq FROM memory_changes WHERE tenant_id = %s AND seq > %s",
        (tenant_id, after),
    )
    return {int(r[0]) for r in await cur.fetchall()}


async def mark_purged(conn: Conn, tenant_id: uuid.UUID, memories: Mapping[str, int]) -> None:
    """Purge: log that these memories (id -> seq) were erased, in the caller's
    transaction, so every process that follows the log wipes their vectors from its
    memory and drops the tenant's snapshots, and a snapshot older than this is never
    loaded again."""
    if not memories:
        return
    ids, seqs = list(memories), list(memories.values())
    await conn.execute(
        "INSERT INTO memory_changes (tenant_id, memory_id, memory_seq, op) "
        "SELECT %s, id, seq, 'purge' FROM unnest(%s::uuid[], %s::bigint[]) AS p (id, seq)",
        (tenant_id, ids, seqs),
    )
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(tenant_id)))


async def purged_after(conn: Conn, tenant_id: uuid.UUID, after: int) -> bool:
    """Whether a memory of the tenant was purged after log position ``after``: a
    snapshot taken before may still hold its vector."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM memory_changes WHERE tenant_id = %s AND seq > %s "
        "AND op = 'purge')",
        (tenant_id, after),
    )
    row = await cur.fetchone()
    return bool(row and row[0])
