"""The SQL of ``executions``, ``execution_steps`` and ``execution_checkpoints``.

Nothing else in the service touches these tables. Every function takes an open
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
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from memory_service.executions.models import Checkpoint, Execution, ExecutionQuery, Step

Conn = AsyncConnection[Any]
_EXECUTION_NAMES = (
    "id", "task_id", "environment_id", "agent_id", "metadata", "status", "parent_id",
    "fork_seq", "head_seq", "keyframe_seq", "created_at", "updated_at", "ended_at", "version",
    "seq",
)
EXECUTION_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _EXECUTION_NAMES))
STEP_COLUMNS = sql.SQL(
    "s.execution_id, s.seq, s.kind, s.name, s.started_at, s.ended_at, s.recorded_at, "
    "s.state_size, s.changed_paths, s.error IS NOT NULL AS has_error, "
    "s.state IS NOT NULL AS keyframe, s.parent_seq"
)
DETAIL_COLUMNS = sql.SQL("s.input, s.output, s.error, s.metadata")
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


@dataclass(slots=True)
class StoredStep:
    """A step row as the service writes it (states and patches already JSON text)."""

    seq: int
    kind: str
    name: str | None
    input: Any
    output: Any
    error: Any
    metadata: dict[str, Any]
    parent_seq: int | None
    started_at: datetime
    ended_at: datetime
    state_json: str | None
    patch_json: str | None
    state_size: int
    changed_paths: int


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


def _segment_params(segments: Sequence[Segment]) -> list[Any]:
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
        values[position : position + 1] = [*_segment_params(keyframe_of), fields["head_seq"]]
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


# -- steps -------------------------------------------------------------------------------
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


async def insert_steps(
    conn: Conn,
    tid: uuid.UUID,
    eid: uuid.UUID,
    steps: Sequence[StoredStep],
    recorded: datetime,
    keyframe_seq: int,
) -> bool:
    """Writes the rows and moves the execution's head past them, in one statement.

    False (nothing written) when the head is no longer the one before the first
    step: another writer appended after the head this batch was computed from.
    """
    columns = {
        "seq": ([s.seq for s in steps], "int[]"),
        "kind": ([s.kind for s in steps], "text[]"),
        "name": ([s.name for s in steps], "text[]"),
        "input": ([_jsonb(s.input) for s in steps], "jsonb[]"),
        "output": ([_jsonb(s.output) for s in steps], "jsonb[]"),
        "error": ([_jsonb(s.error) for s in steps], "jsonb[]"),
        "metadata": ([Jsonb(s.metadata) for s in steps], "jsonb[]"),
        "parent_seq": ([s.parent_seq for s in steps], "int[]"),
        "started_at": ([s.started_at for s in steps], "timestamptz[]"),
        "ended_at": ([s.ended_at for s in steps], "timestamptz[]"),
        "state": ([s.state_json for s in steps], "json[]"),
        "state_patch": ([s.patch_json for s in steps], "json[]"),
        "state_size": ([s.state_size for s in steps], "int[]"),
        "changed_paths": ([s.changed_paths for s in steps], "int[]"),
    }
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    # binary parameters: a state in a text array literal would have every quote escaped
    arrays = sql.SQL(", ").join(
        sql.SQL("%b::{}").format(sql.SQL(kind)) for _, kind in columns.values()
    )
    # compare-and-set: lock the execution row first, write only if the head is still
    # where the batch was computed from, and move the head in the same statement
    statement = sql.SQL(
        "WITH head AS (SELECT id FROM executions WHERE id = %s AND head_seq = %s FOR UPDATE), "
        "added AS (INSERT INTO execution_steps (execution_id, tenant_id, recorded_at, {names}) "
        "SELECT %s, %s, %s, u.* FROM unnest({arrays}) AS u WHERE EXISTS (SELECT 1 FROM head) "
        "RETURNING seq) "
        "UPDATE executions SET head_seq = (SELECT max(seq) FROM added), keyframe_seq = %s, "
        "updated_at = clock_timestamp() WHERE id = %s AND EXISTS (SELECT 1 FROM added) "
        "RETURNING head_seq"
    ).format(names=names, arrays=arrays)
    params = [
        eid, steps[0].seq - 1, eid, tid, recorded,
        *(values for values, _ in columns.values()), keyframe_seq, eid,
    ]
    try:
        cur = await conn.execute(statement, params)
    except pg_errors.UniqueViolation:
        return False
    return await cur.fetchone() is not None


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


async def read_steps(
    conn: Conn,
    segments: Sequence[Segment],
    lo: int,
    hi: int,
    limit: int,
    *,
    details: bool = False,
    descending: bool = False,
) -> list[Step]:
    """Steps with lo < seq <= hi across the lineage, in seq order."""
    cols = sql.SQL(", ").join([STEP_COLUMNS, DETAIL_COLUMNS]) if details else STEP_COLUMNS
    cur = await conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "SELECT {cols} FROM execution_steps s {segments} WHERE s.seq > %s AND s.seq <= %s "
            "ORDER BY s.seq {dir} LIMIT %s"
        ).format(cols=cols, segments=SEGMENTS, dir=sql.SQL("DESC" if descending else "ASC")),
        [*_segment_params(segments), lo, hi, limit],
    )
    return [step_of(r) for r in await cur.fetchall()]


async def read_states(
    conn: Conn, segments: Sequence[Segment], at_seq: int, from_seq: int | None = None
) -> list[tuple[int, str | None, str | None]]:
    """``(seq, state, patch)`` rows from the last keyframe at or before ``at_seq``
    (or from ``from_seq``, when later) through ``at_seq``, in seq order."""
    params = _segment_params(segments)
    cur = await conn.execute(
        sql.SQL(
            "SELECT s.seq, s.state::text, s.state_patch::text FROM execution_steps s {segments} "
            "WHERE s.seq <= %s AND s.seq >= greatest(%s, ("
            "  SELECT max(s.seq) FROM execution_steps s {segments}"
            "  WHERE s.state IS NOT NULL AND s.seq <= %s)) ORDER BY s.seq"
        ).format(segments=SEGMENTS),
        [*params, at_seq, from_seq or 0, *params, at_seq],
    )
    return [(int(r[0]), r[1], r[2]) for r in await cur.fetchall()]


async def read_patches(
    conn: Conn, segments: Sequence[Segment], lo: int, hi: int
) -> list[tuple[int, str | None, str | None]]:
    """``(seq, state, patch)`` of every step with lo < seq <= hi, in seq order."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT s.seq, s.state::text, s.state_patch::text FROM execution_steps s {segments} "
            "WHERE s.seq > %s AND s.seq <= %s ORDER BY s.seq"
        ).format(segments=SEGMENTS),
        [*_segment_params(segments), lo, hi],
    )
    return [(int(r[0]), r[1], r[2]) for r in await cur.fetchall()]


async def last_seq_at(conn: Conn, segments: Sequence[Segment], moment: datetime) -> int | None:
    """The last step that had ended at ``moment``."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT max(s.seq) FROM execution_steps s {segments} WHERE s.ended_at <= %s"
        ).format(segments=SEGMENTS),
        [*_segment_params(segments), moment],
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


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


def step_of(row: dict[str, Any]) -> Step:
    return Step(
        execution_id=str(row["execution_id"]),
        seq=row["seq"],
        kind=row["kind"],
        name=row["name"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        recorded_at=row["recorded_at"],
        state_size=row["state_size"],
        changed_paths=row["changed_paths"],
        has_error=row["has_error"],
        keyframe=row["keyframe"],
        parent_seq=row["parent_seq"],
        input=row.get("input"),
        output=row.get("output"),
        error=row.get("error"),
        metadata=row.get("metadata") or {},
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
