"""The SQL of ``executions`` and ``execution_checkpoints``, and what step queries share.

``steps_repository.py`` holds the SQL of ``execution_steps``; nothing else in the
service touches these tables. Every function takes an open
connection (the service owns transactions) and the tenant's UUID, so no query
can read across tenants. A lineage is a list of ``Segment``s: the seq ranges of
an execution's history and which execution's rows hold them (a fork holds the
steps after its fork point; its ancestors hold the rest). States and patches
leave the database as JSON text and are decoded by the caller with msgspec.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from memory_service.executions.models import Checkpoint, Execution, ExecutionQuery

Conn = AsyncConnection[Any]
_EXECUTION_NAMES = (
    "id", "task_id", "environment_id", "agent_id", "metadata", "status", "parent_id",
    "fork_seq", "head_seq", "keyframe_seq", "created_at", "updated_at", "ended_at", "version",
    "seq",
)
EXECUTION_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _EXECUTION_NAMES))
# the lineage as a join: rows of execution eid with lo < seq <= hi
SEGMENTS = sql.SQL(
    "JOIN unnest(%s::uuid[], %s::int[], %s::int[]) AS g(eid, lo, hi) "
    "ON s.execution_id = g.eid AND s.seq > g.lo AND s.seq <= g.hi"
)


@dataclass(frozen=True, slots=True)
class Segment:
    execution_id: uuid.UUID
    lo: int  # exclusive
    hi: int  # inclusive


@contextlib.asynccontextmanager
async def autocommit(pool: AsyncConnectionPool) -> AsyncIterator[Conn]:
    """A pooled connection in autocommit mode, given back as it was lent.

    A read or a single-statement write then costs one round trip, not three
    (BEGIN, the query, COMMIT); ``conn.transaction()`` still opens a transaction.
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            await conn.set_autocommit(False)


def segment_params(segments: Sequence[Segment]) -> list[Any]:
    return [
        [s.execution_id for s in segments],
        [s.lo for s in segments],
        [s.hi for s in segments],
    ]


# -- executions --------------------------------------------------------------------------
async def insert_execution(
    conn: Conn,
    tid: uuid.UUID,
    fields: dict[str, Any],
    *,
    keyframe_of: Sequence[Segment] | None = None,
) -> Execution:
    """A new execution; with ``keyframe_of`` (a fork's inherited lineage) its
    keyframe_seq is the last keyframe at or before its head, found in the same
    statement."""
    names = list(fields)
    values: list[Any] = [Jsonb(v) if k == "metadata" else v for k, v in fields.items()]
    placeholders: list[sql.Composable] = [sql.Placeholder()] * len(names)
    if keyframe_of is not None:
        position = names.index("keyframe_seq")
        placeholders[position] = sql.SQL(
            "coalesce((SELECT max(s.seq) FROM execution_steps s {segments} "
            "WHERE s.state IS NOT NULL AND s.seq <= %s), 0)"
        ).format(segments=SEGMENTS)
        values[position : position + 1] = [*segment_params(keyframe_of), fields["head_seq"]]
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL("INSERT INTO executions (tenant_id, {cols}) VALUES (%s, {vals}) RETURNING {out}")
        .format(
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            vals=sql.SQL(", ").join(placeholders),
            out=EXECUTION_COLUMNS,
        ),
        [tid, *values],
    )
    return execution_of(await cur.fetchone())


async def get_execution(
    conn: Conn, tid: uuid.UUID, eid: uuid.UUID, *, for_update: bool = False
) -> Execution | None:
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL("SELECT {out} FROM executions WHERE tenant_id = %s AND id = %s {lock}").format(
            out=EXECUTION_COLUMNS, lock=sql.SQL("FOR UPDATE" if for_update else "")
        ),
        (tid, eid),
    )
    row = await cur.fetchone()
    return None if row is None else execution_of(row)


async def row_exists(conn: Conn, table: str, tid: uuid.UUID, row_id: uuid.UUID) -> bool:
    """Whether the tenant has that task or environment (an execution may name either)."""
    cur = await conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE tenant_id = %s AND id = %s").format(
            sql.Identifier(table)
        ),
        (tid, row_id),
    )
    return await cur.fetchone() is not None


async def list_executions(
    conn: Conn,
    tid: uuid.UUID,
    query: ExecutionQuery,
    ids: dict[str, uuid.UUID],
    before_seq: int | None,
    limit: int,
) -> list[Execution]:
    """Newest first; ``ids`` are the parsed id filters (task_id, environment_id, parent_id)."""
    where: list[sql.Composable] = [sql.SQL("tenant_id = %s")]
    params: list[Any] = [tid]
    filters: dict[str, Any] = {**ids, "agent_id": query.agent_id}
    for column, value in filters.items():
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if query.status:
        where.append(sql.SQL("status = ANY(%s)"))
        params.append(list(query.status))
    if query.created_after is not None:
        where.append(sql.SQL("created_at >= %s"))
        params.append(query.created_after)
    if query.created_before is not None:
        where.append(sql.SQL("created_at < %s"))
        params.append(query.created_before)
    if before_seq is not None:
        where.append(sql.SQL("seq < %s"))
        params.append(before_seq)
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL("SELECT {out} FROM executions WHERE {where} ORDER BY seq DESC LIMIT %s").format(
            out=EXECUTION_COLUMNS, where=sql.SQL(" AND ").join(where)
        ),
        [*params, limit],
    )
    return [execution_of(r) for r in await cur.fetchall()]


async def update_execution(
    conn: Conn, tid: uuid.UUID, eid: uuid.UUID, status: str | None, metadata: Any
) -> Execution:
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "UPDATE executions SET status = coalesce(%s, status), "
            "metadata = coalesce(%s, metadata), "
            "ended_at = CASE WHEN coalesce(%s, status) = 'running' THEN NULL "
            "  WHEN coalesce(%s, status) = status THEN ended_at ELSE clock_timestamp() END, "
            "updated_at = clock_timestamp(), version = version + 1 "
            "WHERE tenant_id = %s AND id = %s RETURNING {out}"
        ).format(out=EXECUTION_COLUMNS),
        [status, None if metadata is None else Jsonb(metadata), status, status, tid, eid],
    )
    return execution_of(await cur.fetchone())


async def ancestors(conn: Conn, tid: uuid.UUID, eid: uuid.UUID) -> list[Execution]:
    """The execution and its ancestors, itself first, the root last."""
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "WITH RECURSIVE chain AS ("
            "  SELECT {out}, 0 AS depth FROM executions WHERE tenant_id = %s AND id = %s"
            "  UNION ALL"
            "  SELECT {prefixed}, c.depth + 1 FROM executions e"
            "  JOIN chain c ON e.id = c.parent_id AND e.tenant_id = %s"
            ") SELECT {out} FROM chain ORDER BY depth"
        ).format(
            out=EXECUTION_COLUMNS,
            prefixed=sql.SQL(", ").join(sql.Identifier("e", c) for c in _EXECUTION_NAMES),
        ),
        (tid, eid, tid),
    )
    return [execution_of(r) for r in await cur.fetchall()]


async def forks_of(conn: Conn, tid: uuid.UUID, eid: uuid.UUID) -> list[Execution]:
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "SELECT {out} FROM executions WHERE tenant_id = %s AND parent_id = %s ORDER BY seq"
        ).format(out=EXECUTION_COLUMNS),
        (tid, eid),
    )
    return [execution_of(r) for r in await cur.fetchall()]


async def lock_execution(
    conn: Conn, tid: uuid.UUID, eid: uuid.UUID, *, lock: bool = True
) -> tuple[Execution, datetime] | None:
    """The execution (locked for the transaction, unless ``lock`` is false) and the
    database clock."""
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "SELECT {out}, clock_timestamp() AS now FROM executions "
            "WHERE tenant_id = %s AND id = %s {lock}"
        ).format(out=EXECUTION_COLUMNS, lock=sql.SQL("FOR UPDATE" if lock else "")),
        (tid, eid),
    )
    row = await cur.fetchone()
    return None if row is None else (execution_of(row), row["now"])


# -- checkpoints -------------------------------------------------------------------------
async def insert_checkpoint(
    conn: Conn, tid: uuid.UUID, eid: uuid.UUID, label: str, seq: int, note: str | None
) -> Checkpoint:
    cur = await conn.execute(
        "INSERT INTO execution_checkpoints (execution_id, label, tenant_id, seq, note) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING created_at",
        (eid, label, tid, seq, note),
    )
    row = await cur.fetchone()
    assert row is not None
    return Checkpoint(str(eid), label, seq, note, row[0])


async def checkpoints(
    conn: Conn, tid: uuid.UUID, segments: Sequence[Segment], label: str | None = None
) -> list[Checkpoint]:
    """Labels visible from the lineage: an ancestor's label counts up to the fork point."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT c.execution_id, c.label, c.seq, c.note, c.created_at "
            "FROM execution_checkpoints c "
            "JOIN unnest(%s::uuid[], %s::int[], %s::int[]) AS g(eid, lo, hi) "
            "ON c.execution_id = g.eid AND c.seq <= g.hi "
            "WHERE c.tenant_id = %s AND (%s::text IS NULL OR c.label = %s) "
            "ORDER BY c.seq, c.created_at"
        ),
        [*_segment_params_upto(segments), tid, label, label],
    )
    found = [Checkpoint(str(r[0]), r[1], int(r[2]), r[3], r[4]) for r in await cur.fetchall()]
    # a label set nearer to the execution hides the same label further up its lineage
    order = {s.execution_id: i for i, s in enumerate(segments)}
    best: dict[str, Checkpoint] = {}
    for c in found:
        held = best.get(c.label)
        if held is None or order[uuid.UUID(c.execution_id)] < order[uuid.UUID(held.execution_id)]:
            best[c.label] = c
    return sorted(best.values(), key=lambda c: (c.seq, c.created_at))


def _segment_params_upto(segments: Sequence[Segment]) -> list[Any]:
    # an ancestor's checkpoints are visible up to the seq its descendant forked at
    return [
        [s.execution_id for s in segments],
        [0 for _ in segments],
        [s.hi for s in segments],
    ]


async def delete_checkpoint(conn: Conn, tid: uuid.UUID, eid: uuid.UUID, label: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM execution_checkpoints WHERE tenant_id = %s AND execution_id = %s "
        "AND label = %s",
        (tid, eid, label),
    )
    return cur.rowcount > 0


# -- rows to values ----------------------------------------------------------------------
def execution_of(row: dict[str, Any] | None) -> Execution:
    assert row is not None
    return Execution(
        id=str(row["id"]),
        task_id=_str(row["task_id"]),
        environment_id=_str(row["environment_id"]),
        agent_id=row["agent_id"],
        metadata=row["metadata"],
        status=row["status"],
        parent_id=_str(row["parent_id"]),
        fork_seq=row["fork_seq"],
        head_seq=row["head_seq"],
        keyframe_seq=row["keyframe_seq"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
        version=row["version"],
        seq=row["seq"],
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
