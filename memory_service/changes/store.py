"""SQL of the change feed: the ``changes`` and ``changes_pruned`` tables, and snapshots.

Change rows are written only by the database's triggers (migration 0009), at
commit time and in commit order per tenant, so every read here is a keyset read
on ``seq``. Snapshots read each entity table through the same SQL serializer
(``change_feed_<type>``) that the triggers use, so a snapshot row and a change
row of the same version are the same document.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

CHANNEL = "change_feed"

# type name -> the table its rows live in (each has tenant_id, id, version, seq)
ENTITY_TABLES: dict[str, str] = {
    "memory": "memories",
    "task": "tasks",
    "environment": "environments",
    "execution": "executions",
}


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    type: str
    id: str
    version: int
    op: str  # "upsert" | "delete"
    # the entity as of this change, as the JSON text the trigger stored (passed through
    # to clients without being parsed); None for a tombstone
    entity: str | None
    at: datetime
    # memories, when asked for and still current: little-endian float32 bytes
    embedding: bytes | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    type: str
    id: str
    version: int
    entity: str  # JSON text, as the serializer writes it
    embedding: bytes | None = None


_READ = sql.SQL(
    "SELECT c.seq, c.entity_type, c.entity_id, c.version, c.op, c.body::text, c.at, {embedding} "
    "FROM changes c {join} "
    "WHERE c.tenant_id = %(tenant)s AND c.seq > %(after)s AND c.entity_type = ANY(%(types)s) "
    "ORDER BY c.seq LIMIT %(limit)s"
)
# the embedding of the memory as of this change, while it is still the current version
_EMBEDDING_JOIN = sql.SQL(
    "LEFT JOIN memories m ON c.entity_type = 'memory' AND c.op = 'upsert' "
    "AND m.tenant_id = c.tenant_id AND m.id = c.entity_id AND m.version = c.version"
)


async def read_after(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    after: int,
    types: Sequence[str],
    limit: int,
    *,
    with_embedding: bool = False,
) -> list[Change]:
    query = _READ.format(
        embedding=sql.SQL("m.embedding" if with_embedding else "NULL"),
        join=_EMBEDDING_JOIN if with_embedding else sql.SQL(""),
    )
    # binary results: a vector's text form is parsed float by float in Python
    cur = conn.cursor(binary=True)
    await cur.execute(
        query, {"tenant": tenant_id, "after": after, "types": list(types), "limit": limit}
    )
    return [
        Change(
            seq=row[0],
            type=row[1],
            id=str(row[2]),
            version=row[3],
            op=row[4],
            entity=row[5],
            at=row[6],
            embedding=_f32(row[7]),
        )
        for row in await cur.fetchall()
    ]


async def last_seq(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> int:
    """The newest change of the tenant, or where retention left off if none is kept."""
    cur = await conn.execute(
        "SELECT greatest((SELECT max(seq) FROM changes WHERE tenant_id = %(t)s), "
        "(SELECT through FROM changes_pruned WHERE tenant_id = %(t)s), 0)",
        {"t": tenant_id},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def pruned_through(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> int:
    cur = await conn.execute(
        "SELECT through FROM changes_pruned WHERE tenant_id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def prune_batch(conn: AsyncConnection[Any], older_than: datetime, batch: int) -> int:
    """Delete up to ``batch`` changes older than ``older_than``, oldest first, and
    remember per tenant the highest seq that went; the caller owns the transaction."""
    cur = await conn.execute(
        "WITH gone AS ("
        "  DELETE FROM changes WHERE seq IN ("
        "    SELECT seq FROM changes WHERE at < %s ORDER BY seq LIMIT %s "
        "    FOR UPDATE SKIP LOCKED) "
        "  RETURNING tenant_id, seq), "
        "marks AS ("
        "  INSERT INTO changes_pruned (tenant_id, through) "
        "  SELECT tenant_id, max(seq) FROM gone GROUP BY tenant_id "
        "  ON CONFLICT (tenant_id) DO UPDATE "
        "  SET through = greatest(changes_pruned.through, EXCLUDED.through)) "
        "SELECT count(*) FROM gone",
        (older_than, batch),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def snapshot_rows(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    entity_type: str,
    *,
    with_embedding: bool = False,
    chunk: int = 1000,
) -> AsyncIterator[Entity]:
    """Every current entity of one type, read through a server-side cursor; the caller
    holds the repeatable-read transaction that makes the snapshot consistent."""
    table = ENTITY_TABLES[entity_type]
    embedding = "e.embedding" if with_embedding and entity_type == "memory" else "NULL"
    query = sql.SQL(
        "SELECT e.id, e.version, {serializer}(e)::text, {embedding} FROM {table} e "
        "WHERE e.tenant_id = %s ORDER BY e.seq"
    ).format(
        serializer=sql.Identifier(f"change_feed_{entity_type}"),
        embedding=sql.SQL(embedding),
        table=sql.Identifier(table),
    )
    cur = conn.cursor(name=f"snapshot_{entity_type}", row_factory=dict_row, binary=True)
    cur.itersize = chunk
    async with cur:
        await cur.execute(query, (tenant_id,))
        async for row in cur:
            values = list(row.values())
            yield Entity(entity_type, str(values[0]), values[1], values[2], _f32(values[3]))


def _f32(vector: Any) -> bytes | None:
    if vector is None:
        return None
    if hasattr(vector, "to_numpy"):  # pgvector's Vector, from binary results
        vector = vector.to_numpy()
    return np.asarray(vector, dtype="<f4").tobytes()


async def erase_memory_bodies(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, memories: Mapping[str, int]
) -> None:
    """Purge: every change of these memories becomes a tombstone without a body, in the
    caller's transaction. Seqs stay as they are, so no cursor moves; a client that reads
    the feed afterwards sees only that each version was removed, never what it held. The
    delete's own tombstone is written at commit (a deferred trigger) without a body."""
    await conn.execute(
        "UPDATE changes SET op = 'delete', body = NULL WHERE tenant_id = %s "
        "AND entity_type = 'memory' AND entity_id = ANY(%s::uuid[]) AND op = 'upsert'",
        (tenant_id, list(memories)),
    )
