"""The SQL of ``execution_steps``: appending a batch, the timeline, states and patches.

Appending is one compare-and-set statement that also moves the execution's head
(see ``insert_steps``). Reads take the lineage as ``Segment``s (see
``repository.py``), so a fork reads its ancestors' rows without copies. States
and patches leave the database as JSON text and are decoded by the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.executions.models import Step
from memory_service.executions.repository import SEGMENTS, Conn, Segment, segment_params

STEP_COLUMNS = sql.SQL(
    "s.execution_id, s.seq, s.kind, s.name, s.started_at, s.ended_at, s.recorded_at, "
    "s.state_size, s.changed_paths, s.error IS NOT NULL AS has_error, "
    "s.state IS NOT NULL AS keyframe, s.parent_seq"
)
DETAIL_COLUMNS = sql.SQL("s.input, s.output, s.error, s.metadata")


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
    step (another writer appended after the head this batch was computed from), or
    when the execution has finished since it was read.
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
        "WITH head AS (SELECT id FROM executions WHERE id = %s AND head_seq = %s "
        "AND status = 'running' FOR UPDATE), "
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
        [*segment_params(segments), lo, hi, limit],
    )
    return [step_of(r) for r in await cur.fetchall()]


async def read_states(
    conn: Conn, segments: Sequence[Segment], at_seq: int, from_seq: int | None = None
) -> list[tuple[int, str | None, str | None]]:
    """``(seq, state, patch)`` rows from the last keyframe at or before ``at_seq``
    (or from ``from_seq``, when later) through ``at_seq``, in seq order."""
    params = segment_params(segments)
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
        [*segment_params(segments), lo, hi],
    )
    return [(int(r[0]), r[1], r[2]) for r in await cur.fetchall()]


async def last_seq_at(conn: Conn, segments: Sequence[Segment], moment: datetime) -> int | None:
    """The last step that had ended at ``moment``."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT max(s.seq) FROM execution_steps s {segments} WHERE s.ended_at <= %s"
        ).format(segments=SEGMENTS),
        [*segment_params(segments), moment],
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


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
