"""The SQL of ``execution_steps``: appending a batch, the timeline, states and patches.

Appending is one compare-and-set statement that also moves the execution's head
(see ``insert_steps``). Reads take the lineage as ``Segment``s (see
``repository.py``), so a fork reads its ancestors' rows without copies. States
and patches leave the database as JSON text and are decoded by the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.executions.models import FINISHED, Step
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
    started_at: datetime | None  # None: the time it is recorded
    ended_at: datetime | None
    state_json: str | None
    patch_json: str | None
    state_size: int
    changed_paths: int



@dataclass(frozen=True, slots=True)
class Appended:
    """What the append statement found: ``head_seq`` is the new head when the rows
    were written; otherwise the execution's current head and status tell why not
    (both None: no such execution)."""

    written: bool
    head_seq: int | None
    status: str | None
    recorded_at: datetime


# the columns a step row is inserted with, in the order of the arrays that carry them
_STEP_ARRAYS: tuple[tuple[str, str, Callable[[StoredStep], Any]], ...] = (
    ("seq", "int[]", attrgetter("seq")),
    ("kind", "text[]", attrgetter("kind")),
    ("name", "text[]", attrgetter("name")),
    ("input", "jsonb[]", lambda s: _jsonb(s.input)),
    ("output", "jsonb[]", lambda s: _jsonb(s.output)),
    ("error", "jsonb[]", lambda s: _jsonb(s.error)),
    ("metadata", "jsonb[]", lambda s: Jsonb(s.metadata)),
    ("parent_seq", "int[]", attrgetter("parent_seq")),
    ("started_at", "timestamptz[]", attrgetter("started_at")),
    ("ended_at", "timestamptz[]", attrgetter("ended_at")),
    ("state", "json[]", attrgetter("state_json")),
    ("state_patch", "json[]", attrgetter("patch_json")),
    ("state_size", "int[]", attrgetter("state_size")),
    ("changed_paths", "int[]", attrgetter("changed_paths")),
)
# steps given without times take the statement's clock
_DEFAULT_TIMES = {
    "started_at": "coalesce(u.started_at, u.ended_at, now.t)",
    "ended_at": "coalesce(u.ended_at, now.t)",
}


def _insert_statement() -> bytes:
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _, _ in _STEP_ARRAYS)
    values = sql.SQL(", ").join(
        sql.SQL(_DEFAULT_TIMES[name]) if name in _DEFAULT_TIMES else sql.Identifier("u", name)
        for name, _, _ in _STEP_ARRAYS
    )
    # binary parameters: a state in a text array literal would have every quote escaped
    arrays = sql.SQL(", ").join(sql.SQL("%b::{}").format(sql.SQL(kind)) for _, kind, _ in _STEP_ARRAYS)
    return sql.SQL(
        "WITH now AS (SELECT coalesce(%s::timestamptz, clock_timestamp()) AS t), "
        "head AS (SELECT id, head_seq, keyframe_seq, status FROM executions "
        "  WHERE tenant_id = %s AND id = %s FOR UPDATE), "
        "ok AS (SELECT id FROM head "
        "  WHERE head_seq = %s AND keyframe_seq = %s AND status <> ALL(%s)), "
        "added AS (INSERT INTO execution_steps (execution_id, tenant_id, recorded_at, {names}) "
        "  SELECT %s, %s, now.t, {values} FROM unnest({arrays}) AS u({names}) CROSS JOIN now "
        "  WHERE EXISTS (SELECT 1 FROM ok) RETURNING seq), "
        "moved AS (UPDATE executions SET head_seq = (SELECT max(seq) FROM added), "
        "  keyframe_seq = %s, updated_at = clock_timestamp() "
        "  WHERE id = %s AND EXISTS (SELECT 1 FROM added) RETURNING head_seq) "
        "SELECT (SELECT head_seq FROM moved), h.head_seq, h.status, now.t "
        "FROM now LEFT JOIN head h ON true"
    ).format(names=names, values=values, arrays=arrays).as_bytes(None)


# composed once: a statement built per append cost as much as its parameters
_INSERT_STEPS = _insert_statement()


async def insert_steps(
    conn: Conn,
    tid: uuid.UUID,
    eid: uuid.UUID,
    steps: Sequence[StoredStep],
    expected: tuple[int, int],
    keyframe_seq: int,
    recorded: datetime | None = None,
) -> Appended:
    """Writes the rows and moves the execution's head past them, in one statement.

    ``expected`` is the (head_seq, keyframe_seq) the batch was computed from; the
    rows are written only while the execution is still there, still at that head
    and not finished, all checked under its row lock in the same statement, which
    also answers why when it writes nothing. Steps without times get ``recorded``
    (the database clock when None), and so does their ``recorded_at``.
    """
    columns = [[value(s) for s in steps] for _, _, value in _STEP_ARRAYS]
    params = [
        recorded, tid, eid, *expected, list(FINISHED), eid, tid, *columns, keyframe_seq, eid,
    ]
    try:
        cur = await conn.execute(_INSERT_STEPS, params)
    except pg_errors.UniqueViolation:
        # a writer that computed from a stale head raced one that had not committed
        return Appended(False, expected[0] + 1, None, recorded or datetime.now(UTC))
    row = await cur.fetchone()
    assert row is not None
    moved, head, status, now = row
    if moved is not None:
        return Appended(True, int(moved), status, now)
    return Appended(False, None if head is None else int(head), status, now)


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
