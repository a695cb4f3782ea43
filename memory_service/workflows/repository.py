"""All workflow SQL: definitions, runs, steps, attempts and signals.

Every function takes a connection whose transaction the caller owns, so one
engine transition is one transaction however many of these it calls. Locks are
taken in one order everywhere, the run row before its step rows, so transitions
never deadlock; claims lock only step rows, and skip the locked ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.workflows.models import Attempt, Definition, Run, RunQuery, Step

Conn = AsyncConnection[Any]
RUN_COLS = sql.SQL(
    "id, tenant_id, definition_id, workflow, version, status, input, output, error, "
    "idempotency_key, forked_from, fork_step, execution_id, timeline_closed, steps_total, "
    "steps_completed, "
    "created_at, updated_at, finished_at, seq"
)
STEP_COLS = sql.SQL(
    "id, run_id, tenant_id, step_id, parent_step, item_index, position, kind, queue, status, "
    "depends_on, pending_deps, children_left, spec, input, output, error, attempts, retry_base, "
    "available_at, current_attempt, lease_expires_at, reused, created_at, updated_at, "
    "completed_at"
)
_STEP_FIELDS = {
    "status",
    "input",
    "output",
    "error",
    "attempts",
    "available_at",
    "current_attempt",
    "lease_expires_at",
    "retry_base",
    "children_left",
    "pending_deps",
    "completed_at",
}
_JSON_FIELDS = {"input", "output"}


# -- definitions ------------------------------------------------------------------------
async def lock_name(conn: Conn, tenant_id: str, name: str) -> None:
    """Serialises new versions of one workflow name until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"wf:{tenant_id}:{name}",))


async def get_definition(
    conn: Conn, tenant_id: str, name: str, version: int | None = None
) -> Definition | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, name, version, definition, created_at, digest FROM workflow_definitions "
        "WHERE tenant_id = %s AND name = %s AND (%s::int IS NULL OR version = %s) "
        "ORDER BY version DESC LIMIT 1",
        (tenant_id, name, version, version),
    )
    row = await cur.fetchone()
    return _definition(row) if row else None


async def insert_definition(
    conn: Conn, tenant_id: str, name: str, version: int, digest: str, body: dict[str, Any]
) -> Definition:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO workflow_definitions (tenant_id, name, version, digest, definition) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id, name, version, definition, created_at, digest",
        (tenant_id, name, version, digest, Jsonb(body)),
    )
    return _definition(await cur.fetchone())


async def definition_by_id(conn: Conn, definition_id: str) -> Definition:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, name, version, definition, created_at, digest FROM workflow_definitions "
        "WHERE id = %s",
        (definition_id,),
    )
    return _definition(await cur.fetchone())


async def list_definitions(
    conn: Conn, tenant_id: str, after_name: str, limit: int
) -> list[Definition]:
    """The latest version of each name, by name."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT DISTINCT ON (name) id, name, version, definition, created_at, digest "
        "FROM workflow_definitions WHERE tenant_id = %s AND name > %s "
        "ORDER BY name, version DESC LIMIT %s",
        (tenant_id, after_name, limit),
    )
    return [_definition(r) for r in await cur.fetchall()]


async def versions(conn: Conn, tenant_id: str, name: str) -> list[tuple[int, datetime]]:
    cur = await conn.execute(
        "SELECT version, created_at FROM workflow_definitions WHERE tenant_id = %s AND name = %s "
        "ORDER BY version",
        (tenant_id, name),
    )
    return [(int(v), at) for v, at in await cur.fetchall()]


# -- runs -------------------------------------------------------------------------------
async def insert_run(
    conn: Conn,
    tenant_id: str,
    definition: Definition,
    input: Any,
    idempotency_key: str | None,
    *,
    run_id: str | None = None,
    execution_id: str | None = None,
    forked_from: str | None = None,
    fork_step: str | None = None,
) -> Run | None:
    """The new run, or None when the idempotency key already names one."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "INSERT INTO workflow_runs (id, tenant_id, definition_id, workflow, version, input, "
            "idempotency_key, execution_id, forked_from, fork_step, steps_total) "
            "VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, workflow, idempotency_key) DO NOTHING RETURNING {}"
        ).format(RUN_COLS),
        (
            run_id,
            tenant_id,
            definition.id,
            definition.name,
            definition.version,
            Jsonb(input),
            idempotency_key,
            execution_id,
            forked_from,
            fork_step,
            len(definition.steps),
        ),
    )
    row = await cur.fetchone()
    return _run(row) if row else None


async def run_by_key(conn: Conn, tenant_id: str, workflow: str, key: str) -> Run | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_runs WHERE tenant_id = %s AND workflow = %s "
            "AND idempotency_key = %s"
        ).format(RUN_COLS),
        (tenant_id, workflow, key),
    )
    row = await cur.fetchone()
    return _run(row) if row else None


async def get_run(
    conn: Conn, tenant_id: str | None, run_id: str, *, lock: bool = False
) -> Run | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_runs WHERE id = %s AND (%s::uuid IS NULL OR tenant_id = %s){}"
        ).format(RUN_COLS, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")),
        (run_id, tenant_id, tenant_id),
    )
    row = await cur.fetchone()
    return _run(row) if row else None


async def list_runs(
    conn: Conn, tenant_id: str, query: RunQuery, before_seq: int, limit: int
) -> list[Run]:
    """Newest first, by seq below ``before_seq``."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_runs WHERE tenant_id = %s AND seq < %s "
            "AND (%s::text IS NULL OR workflow = %s) AND (%s::text IS NULL OR status = %s) "
            "ORDER BY seq DESC LIMIT %s"
        ).format(RUN_COLS),
        (tenant_id, before_seq, query.workflow, query.workflow, query.status, query.status, limit),
    )
    return [_run(r) for r in await cur.fetchall()]


async def set_run(
    conn: Conn, run_id: str, status: str, *, output: Any = None, error: str | None = None
) -> None:
    finished = status in ("completed", "failed", "cancelled")
    await conn.execute(
        "UPDATE workflow_runs SET status = %s, output = %s, error = %s, updated_at = "
        "clock_timestamp(), finished_at = CASE WHEN %s THEN clock_timestamp() END WHERE id = %s",
        (status, Jsonb(output) if output is not None else None, error, finished, run_id),
    )


async def count_completed(conn: Conn, run_id: str, delta: int) -> int:
    cur = await conn.execute(
        "UPDATE workflow_runs SET steps_completed = steps_completed + %s, updated_at = "
        "clock_timestamp() WHERE id = %s RETURNING steps_completed",
        (delta, run_id),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def set_execution(conn: Conn, run_id: str, execution_id: str) -> None:
    await conn.execute(
        "UPDATE workflow_runs SET execution_id = %s WHERE id = %s", (execution_id, run_id)
    )


# -- steps ------------------------------------------------------------------------------
async def insert_steps(
    conn: Conn, tenant_id: str, run_id: str, rows: list[dict[str, Any]]
) -> list[Step]:
    cur = conn.cursor(row_factory=dict_row)
    out: list[Step] = []
    for r in rows:
        await cur.execute(
            sql.SQL(
                "INSERT INTO workflow_steps (tenant_id, run_id, step_id, parent_step, item_index, "
                "position, kind, queue, status, depends_on, pending_deps, spec, input, output, "
                "reused, completed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, CASE WHEN %s THEN clock_timestamp() END) RETURNING {}"
            ).format(STEP_COLS),
            (
                tenant_id,
                run_id,
                r["step_id"],
                r.get("parent_step"),
                r.get("item_index"),
                r["position"],
                r["kind"],
                r["queue"],
                r.get("status", "pending"),
                r.get("depends_on", []),
                r.get("pending_deps", 0),
                Jsonb(r["spec"]),
                _json(r.get("input")),
                _json(r.get("output")),
                r.get("reused", False),
                r.get("status") == "completed",
            ),
        )
        out.append(_step(await cur.fetchone()))
    return out


async def run_steps(conn: Conn, run_id: str, *, lock: bool = False) -> list[Step]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_steps WHERE run_id = %s ORDER BY position, item_index NULLS FIRST{}"
        ).format(STEP_COLS, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")),
        (run_id,),
    )
    return [_step(r) for r in await cur.fetchall()]


async def get_step(conn: Conn, step_row: str, *, lock: bool = True) -> Step | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM workflow_steps WHERE id = %s{}").format(
            STEP_COLS, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
        ),
        (step_row,),
    )
    row = await cur.fetchone()
    return _step(row) if row else None


async def update_step(conn: Conn, step: Step, **changes: Any) -> None:
    """Writes ``changes`` to the row and to ``step`` itself."""
    assert set(changes) <= _STEP_FIELDS, changes
    sets = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes]
    values = [_json(v) if k in _JSON_FIELDS else v for k, v in changes.items()]
    await conn.execute(
        sql.SQL(
            "UPDATE workflow_steps SET {}, updated_at = clock_timestamp() WHERE id = %s"
        ).format(sql.SQL(", ").join(sets)),
        [*values, step.row],
    )
    for key, value in changes.items():
        setattr(step, key, value)


async def release_dependents(conn: Conn, run_id: str, step_id: str) -> list[Step]:
    """One fewer pending dependency for each step after ``step_id``; returns them."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "UPDATE workflow_steps SET pending_deps = pending_deps - 1 WHERE run_id = %s "
            "AND parent_step IS NULL AND %s = ANY(depends_on) RETURNING {}"
        ).format(STEP_COLS),
        (run_id, step_id),
    )
    return sorted((_step(r) for r in await cur.fetchall()), key=lambda s: s.position)


async def outputs(conn: Conn, run_id: str, step_ids: list[str]) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT step_id, output FROM workflow_steps WHERE run_id = %s AND step_id = ANY(%s) "
        "AND status = 'completed'",
        (run_id, step_ids),
    )
    return {sid: output for sid, output in await cur.fetchall()}


async def sink_outputs(conn: Conn, run_id: str) -> dict[str, Any]:
    """Outputs of the top-level steps nothing depends on: the run's result."""
    cur = await conn.execute(
        "SELECT s.step_id, s.output FROM workflow_steps s WHERE s.run_id = %s "
        "AND s.parent_step IS NULL AND NOT EXISTS (SELECT 1 FROM workflow_steps d "
        "WHERE d.run_id = s.run_id AND s.step_id = ANY(d.depends_on)) ORDER BY s.position",
        (run_id,),
    )
    return {sid: output for sid, output in await cur.fetchall()}


async def child_outputs(conn: Conn, run_id: str, parent: str) -> list[Any]:
    cur = await conn.execute(
        "SELECT output FROM workflow_steps WHERE run_id = %s AND parent_step = %s "
        "ORDER BY item_index",
        (run_id, parent),
    )
    return [r[0] for r in await cur.fetchall()]


async def unfinished_children(conn: Conn, run_id: str, parent: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM workflow_steps WHERE run_id = %s AND parent_step = %s "
        "AND status <> 'completed'",
        (run_id, parent),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def parent_step(conn: Conn, run_id: str, step_id: str) -> Step | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_steps WHERE run_id = %s AND step_id = %s FOR UPDATE"
        ).format(STEP_COLS),
        (run_id, step_id),
    )
    row = await cur.fetchone()
    return _step(row) if row else None


# -- attempts ---------------------------------------------------------------------------
_CLAIM = """
WITH picked AS (
    SELECT id FROM workflow_steps
    WHERE status = 'ready' AND {tenant} AND queue = ANY(%(queues)s)
      AND available_at <= clock_timestamp()
    ORDER BY available_at LIMIT %(n)s FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE workflow_steps s SET status = 'running', attempts = s.attempts + 1,
        current_attempt = gen_random_uuid(), updated_at = clock_timestamp(),
        lease_expires_at = least(clock_timestamp() + make_interval(secs => %(lease)s),
            clock_timestamp() + make_interval(secs => (s.spec ->> 'timeout_s')::float8))
    FROM picked WHERE s.id = picked.id
    RETURNING s.*
), attempts AS (
    INSERT INTO workflow_attempts (id, tenant_id, run_id, step_row, number, worker_id,
        lease_token, available_at, deadline_at, lease_expires_at)
    SELECT c.current_attempt, c.tenant_id, c.run_id, c.id, c.attempts, %(worker)s,
        gen_random_uuid(), c.available_at,
        clock_timestamp() + make_interval(secs => (c.spec ->> 'timeout_s')::float8),
        c.lease_expires_at
    FROM claimed c
    RETURNING *
)
SELECT a.id, a.tenant_id, a.run_id, a.step_row, c.step_id, r.workflow, c.kind, c.queue,
    a.number, a.worker_id, a.lease_token, c.input, a.available_at, a.claimed_at,
    a.lease_expires_at, a.deadline_at, r.execution_id
FROM attempts a JOIN claimed c ON c.id = a.step_row JOIN workflow_runs r ON r.id = a.run_id
ORDER BY a.available_at
"""


async def claim(
    conn: Conn, tenant_id: str | None, queues: list[str], n: int, lease_s: float, worker_id: str
) -> list[Attempt]:
    """Claims up to ``n`` ready steps; ``tenant_id`` None claims any tenant's (the driver)."""
    tenant = sql.SQL("tenant_id = %(tenant)s") if tenant_id else sql.SQL("true")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(_CLAIM).format(tenant=tenant),
        {"tenant": tenant_id, "queues": queues, "n": n, "lease": lease_s, "worker": worker_id},
    )
    return [_attempt(r) for r in await cur.fetchall()]


async def attempt_row(conn: Conn, tenant_id: str | None, attempt_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT a.id, a.run_id, a.step_row, a.status, a.lease_token, a.deadline_at, "
        "a.lease_expires_at, a.lease_expires_at < clock_timestamp() AS expired "
        "FROM workflow_attempts a WHERE a.id = %s AND (%s::uuid IS NULL OR a.tenant_id = %s)",
        (attempt_id, tenant_id, tenant_id),
    )
    return await cur.fetchone()


async def finish_attempt(
    conn: Conn, attempt_id: str, status: str, error: str | None = None
) -> None:
    await conn.execute(
        "UPDATE workflow_attempts SET status = %s, error = %s, finished_at = clock_timestamp() "
        "WHERE id = %s AND status = 'running'",
        (status, error, attempt_id),
    )


async def extend_lease(conn: Conn, attempt_id: str, step_row: str, lease_s: float) -> datetime:
    cur = await conn.execute(
        "UPDATE workflow_attempts SET lease_expires_at = least(clock_timestamp() + "
        "make_interval(secs => %s), deadline_at) WHERE id = %s RETURNING lease_expires_at",
        (lease_s, attempt_id),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(
        "UPDATE workflow_steps SET lease_expires_at = %s WHERE id = %s", (row[0], step_row)
    )
    return row[0]


async def cancel_attempts(conn: Conn, run_id: str) -> None:
    await conn.execute(
        "UPDATE workflow_attempts SET status = 'cancelled', finished_at = clock_timestamp() "
        "WHERE run_id = %s AND status = 'running'",
        (run_id,),
    )


# -- timers and leases ------------------------------------------------------------------
async def due(conn: Conn, limit: int) -> list[tuple[str, str, str]]:
    """(run, step row, why) for timers that are due and leases that ran out."""
    cur = await conn.execute(
        "(SELECT run_id, id, 'timer' FROM workflow_steps WHERE status = 'scheduled' "
        "AND available_at <= clock_timestamp() ORDER BY available_at LIMIT %s) UNION ALL "
        "(SELECT run_id, id, 'lease' FROM workflow_steps WHERE status = 'running' "
        "AND lease_expires_at < clock_timestamp() ORDER BY lease_expires_at LIMIT %s)",
        (limit, limit),
    )
    return [(str(r), str(s), why) for r, s, why in await cur.fetchall()]


async def next_wakeup(conn: Conn) -> datetime | None:
    cur = await conn.execute(
        "SELECT min(t) FROM (SELECT min(available_at) FROM workflow_steps WHERE status = "
        "'scheduled' UNION ALL SELECT min(lease_expires_at) FROM workflow_steps WHERE status "
        "= 'running' UNION ALL SELECT min(available_at) FROM workflow_steps WHERE status = "
        "'ready' AND queue = '_builtin' AND available_at > clock_timestamp()) AS w(t)"
    )
    row = await cur.fetchone()
    return row[0] if row else None


# -- the execution timeline -------------------------------------------------------------
async def lock_timeline(conn: Conn, run_id: str) -> None:
    """One appender per run at a time, until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"wf-timeline:{run_id}",))


async def assign_timeline_seq(conn: Conn, run_id: str, step_row: str) -> int:
    """The completed step's place in the run's execution (under the run's lock)."""
    cur = await conn.execute(
        "WITH r AS (UPDATE workflow_runs SET timeline_head = timeline_head + 1 WHERE id = %s "
        "RETURNING timeline_head) UPDATE workflow_steps SET timeline_seq = "
        "(SELECT timeline_head FROM r) WHERE id = %s RETURNING timeline_seq",
        (run_id, step_row),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def unappended(conn: Conn, run_id: str) -> list[Step]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {}, timeline_seq FROM workflow_steps WHERE run_id = %s "
            "AND timeline_seq IS NOT NULL AND NOT appended ORDER BY timeline_seq"
        ).format(STEP_COLS),
        (run_id,),
    )
    return [_step(r) for r in await cur.fetchall()]


async def mark_appended(conn: Conn, step_rows: list[str]) -> None:
    await conn.execute(
        "UPDATE workflow_steps SET appended = true WHERE id = ANY(%s::uuid[])", (step_rows,)
    )


async def close_timeline(conn: Conn, run_id: str) -> None:
    await conn.execute("UPDATE workflow_runs SET timeline_closed = true WHERE id = %s", (run_id,))


async def timelines_behind(conn: Conn, limit: int) -> list[str]:
    """Runs whose execution misses completed steps or the run's final status."""
    cur = await conn.execute(
        "(SELECT DISTINCT run_id FROM workflow_steps WHERE timeline_seq IS NOT NULL "
        "AND NOT appended LIMIT %s) UNION (SELECT id FROM workflow_runs WHERE status <> "
        "'running' AND NOT timeline_closed AND execution_id IS NOT NULL LIMIT %s)",
        (limit, limit),
    )
    return [str(r[0]) for r in await cur.fetchall()]


# -- signals ----------------------------------------------------------------------------
async def insert_signal(conn: Conn, tenant_id: str, run_id: str, name: str, payload: Any) -> None:
    await conn.execute(
        "INSERT INTO workflow_signals (tenant_id, run_id, name, payload) VALUES (%s, %s, %s, %s)",
        (tenant_id, run_id, name, Jsonb(payload)),
    )


async def first_signal(conn: Conn, run_id: str, name: str) -> tuple[bool, Any]:
    cur = await conn.execute(
        "SELECT payload FROM workflow_signals WHERE run_id = %s AND name = %s ORDER BY seq LIMIT 1",
        (run_id, name),
    )
    row = await cur.fetchone()
    return (True, row[0]) if row else (False, None)


async def waiting_for(conn: Conn, run_id: str, name: str) -> list[Step]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM workflow_steps WHERE run_id = %s AND kind = 'wait_for_signal' "
            "AND status = 'scheduled' AND input ->> 'signal' = %s ORDER BY position FOR UPDATE"
        ).format(STEP_COLS),
        (run_id, name),
    )
    return [_step(r) for r in await cur.fetchall()]


# -- rows to values ---------------------------------------------------------------------
def _json(value: Any) -> Any:
    return None if value is None else Jsonb(value)


def _definition(row: Any) -> Definition:
    return Definition(
        str(row["id"]),
        row["name"],
        row["version"],
        row["definition"],
        row["created_at"],
        row["digest"],
    )


def _run(r: dict[str, Any]) -> Run:
    return Run(
        str(r["id"]),
        str(r["tenant_id"]),
        str(r["definition_id"]),
        r["workflow"],
        r["version"],
        r["status"],
        r["input"],
        r["output"],
        r["error"],
        r["idempotency_key"],
        _str(r["forked_from"]),
        r["fork_step"],
        _str(r["execution_id"]),
        r["timeline_closed"],
        r["steps_total"],
        r["steps_completed"],
        r["created_at"],
        r["updated_at"],
        r["finished_at"],
        r["seq"],
    )


def _step(r: Any) -> Step:
    return Step(
        str(r["id"]),
        str(r["run_id"]),
        str(r["tenant_id"]),
        r["step_id"],
        r["parent_step"],
        r["item_index"],
        r["position"],
        r["kind"],
        r["queue"],
        r["status"],
        list(r["depends_on"]),
        r["pending_deps"],
        r["children_left"],
        r["spec"],
        r["input"],
        r["output"],
        r["error"],
        r["attempts"],
        r["retry_base"],
        r["available_at"],
        _str(r["current_attempt"]),
        r["lease_expires_at"],
        r["reused"],
        r["created_at"],
        r["updated_at"],
        r["completed_at"],
        r.get("timeline_seq"),
    )


def _attempt(r: dict[str, Any]) -> Attempt:
    return Attempt(
        str(r["id"]),
        str(r["tenant_id"]),
        str(r["run_id"]),
        str(r["step_row"]),
        r["step_id"],
        r["workflow"],
        r["kind"],
        r["queue"],
        r["number"],
        r["worker_id"],
        str(r["lease_token"]),
        r["input"],
        r["available_at"],
        r["claimed_at"],
        r["lease_expires_at"],
        r["deadline_at"],
        _str(r["execution_id"]),
    )


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)
