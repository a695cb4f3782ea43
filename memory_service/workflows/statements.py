"""The workflow statements' plumbing: the named queries of ``queries.sql`` (their only
reader), the column lists they share, running one for rows or a value, and a time
read from the database clock.
``repository`` holds the statements' uses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]
RUN_COLS = (
    "id, tenant_id, definition_id, workflow, version, status, input, output, error, "
    "idempotency_key, forked_from, fork_step, execution_id, timeline_closed, steps_total, "
    "steps_completed, created_at, updated_at, finished_at, seq"
)
STEP_COLS = (
    "id, run_id, tenant_id, step_id, parent_step, item_index, position, kind, queue, status, "
    "depends_on, pending_deps, children_left, spec, input, output, error, attempts, retry_base, "
    "available_at, current_attempt, lease_expires_at, reused, created_at, updated_at, "
    "completed_at"
)
_STEP_FIELDS = {
    "status", "input", "output", "error", "attempts", "available_at", "current_attempt",
    "lease_expires_at", "retry_base", "children_left", "pending_deps", "completed_at",
}  # fmt: skip
_JSON_FIELDS = {"input", "output"}
_LOCK = {True: sql.SQL("FOR UPDATE"), False: sql.SQL("")}


def _load_queries() -> dict[str, str]:
    text = (Path(__file__).with_name("queries.sql")).read_text()
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)[1:]
    return {
        name: body.strip()
        .rstrip(";")
        .replace("{run_cols}", RUN_COLS)
        .replace("{step_cols}", STEP_COLS)
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


Q = _load_queries()


async def fetch_all(conn: Conn, query: Any, params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


async def fetch_value(conn: Conn, query: Any, params: Any) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


def fmt(name: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(Q[name]).format(**parts)


def json_param(value: Any) -> Any:
    return None if value is None else Jsonb(value)


@dataclass(frozen=True, slots=True)
class DbClock:
    """A time the statement itself reads from the database's clock, ``after_s`` on:
    no round trip to read the clock first."""

    after_s: float = 0.0


NOW = DbClock()
