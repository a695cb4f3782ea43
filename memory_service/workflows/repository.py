"""All workflow SQL: definitions, runs, steps, attempts, signals and the run timelines.

The statements are named queries in ``queries.sql`` beside this module, loaded and
run through ``statements``. Every function takes a connection whose transaction the
caller owns, so one engine transition is one transaction however many of these
it calls. Locks are taken in one order everywhere, the run row before its step
rows, so transitions never deadlock; claims lock only step rows, and skip the
locked ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.workflows.models import Attempt, Definition, Run, RunQuery, Step
from memory_service.workflows.rows import attempt_of, definition_of, run_of, step_of
from memory_service.workflows.statements import (
    _JSON_FIELDS,
    _LOCK,
    _STEP_FIELDS,
    Conn,
    DbClock,
    Q,
    fetch_all,
    fetch_value,
    fmt,
    json_param,
)


# -- definitions ------------------------------------------------------------------------
async def lock_name(conn: Conn, tenant_id: uuid.UUID, name: str) -> None:
    """Serialises new versions of one workflow name until commit."""
    await conn.execute(Q["lock_name"], (f"wf:{tenant_id}:{name}",))


async def get_definition(
    conn: Conn, tenant_id: uuid.UUID, name: str, version: int | None = None
) -> Definition | None:
    rows = await fetch_all(conn, Q["get_definition"], (tenant_id, name, version, version))
    return definition_of(rows[0]) if rows else None


async def insert_definition(
    conn: Conn, tenant_id: uuid.UUID, name: str, version: int, digest: str, body: dict[str, Any]
) -> Definition:
    params = (tenant_id, name, version, digest, Jsonb(body))
    return definition_of((await fetch_all(conn, Q["insert_definition"], params))[0])


async def definition_by_id(conn: Conn, definition_id: str) -> Definition:
    return definition_of((await fetch_all(conn, Q["definition_by_id"], (definition_id,)))[0])


async def list_definitions(
    conn: Conn, tenant_id: uuid.UUID, after_name: str, limit: int
) -> list[Definition]:
    """The latest version of each name, by name."""
    rows = await fetch_all(conn, Q["list_definitions"], (tenant_id, after_name, limit))
    return [definition_of(r) for r in rows]


async def versions(conn: Conn, tenant_id: uuid.UUID, name: str) -> list[tuple[int, datetime]]:
    cur = await conn.execute(Q["versions"], (tenant_id, name))
    return [(int(v), at) for v, at in await cur.fetchall()]


# -- runs -------------------------------------------------------------------------------
async def insert_run(
    conn: Conn,
    tenant_id: uuid.UUID,
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
    params = (
        run_id, tenant_id, definition.id, definition.name, definition.version, Jsonb(input),
        idempotency_key, execution_id, forked_from, fork_step, len(definition.steps),
    )  # fmt: skip
    rows = await fetch_all(conn, Q["insert_run"], params)
    return run_of(rows[0]) if rows else None


async def run_by_key(conn: Conn, tenant_id: uuid.UUID, workflow: str, key: str) -> Run | None:
    rows = await fetch_all(conn, Q["run_by_key"], (tenant_id, workflow, key))
    return run_of(rows[0]) if rows else None


async def get_run(
    conn: Conn, tenant_id: uuid.UUID | None, run_id: str, *, lock: bool = False
) -> Run | None:
    rows = await fetch_all(conn, fmt("get_run", lock=_LOCK[lock]), (run_id, tenant_id, tenant_id))
    return run_of(rows[0]) if rows else None


async def list_runs(
    conn: Conn, tenant_id: uuid.UUID, query: RunQuery, before_seq: int, limit: int
) -> list[Run]:
    """Newest first, by seq below ``before_seq``."""
    w, s = query.workflow, query.status
    rows = await fetch_all(conn, Q["list_runs"], (tenant_id, before_seq, w, w, s, s, limit))
    return [run_of(r) for r in rows]


async def reopen_timeline(conn: Conn, run_id: str, execution_id: str) -> None:
    """The run's steps go to ``execution_id`` from now on, and it is closed again at the end."""
    await conn.execute(Q["reopen_timeline"], (execution_id, run_id))


async def set_run(
    conn: Conn, run_id: str, status: str, *, output: Any = None, error: str | None = None
) -> None:
    finished = status in ("completed", "failed", "cancelled")
    await conn.execute(Q["set_run"], (status, json_param(output), error, finished, run_id))


async def count_completed(conn: Conn, run_id: str, delta: int) -> int:
    return int(await fetch_value(conn, Q["count_completed"], (delta, run_id)) or 0)


# -- steps ------------------------------------------------------------------------------
async def insert_steps(
    conn: Conn, tenant_id: uuid.UUID, run_id: str, rows: list[dict[str, Any]]
) -> list[Step]:
    """All rows in one pipelined round trip, returned in the order given."""
    params = [
        (
            tenant_id, run_id, r["step_id"], r.get("parent_step"), r.get("item_index"),
            r["position"], r["kind"], r["queue"], r.get("status", "pending"),
            r.get("depends_on", []), r.get("pending_deps", 0), Jsonb(r["spec"]),
            json_param(r.get("input")), json_param(r.get("output")), r.get("reused", False),
            r.get("status") == "completed",
        )
        for r in rows
    ]  # fmt: skip
    cur = conn.cursor(row_factory=dict_row)
    await cur.executemany(Q["insert_step"], params, returning=True)
    out: list[Step] = []
    while True:
        out += [step_of(r) for r in await cur.fetchall()]
        if not cur.nextset():
            return out


async def run_steps(conn: Conn, run_id: str, *, lock: bool = False) -> list[Step]:
    return [step_of(r) for r in await fetch_all(conn, fmt("run_steps", lock=_LOCK[lock]), (run_id,))]


async def get_step(conn: Conn, step_row: str, *, lock: bool = True) -> Step | None:
    rows = await fetch_all(conn, fmt("get_step", lock=_LOCK[lock]), (step_row,))
    return step_of(rows[0]) if rows else None


async def update_step(conn: Conn, step: Step, **changes: Any) -> None:
    """Writes ``changes`` to the row and to ``step`` itself (a ``DbClock`` time only to
    the row: nothing in a transition reads it back)."""
    assert set(changes) <= _STEP_FIELDS, changes
    sets: list[sql.Composable] = []
    values: list[Any] = []
    for key, value in changes.items():
        if isinstance(value, DbClock):
            sets.append(
                sql.SQL("{} = clock_timestamp() + make_interval(secs => %s)").format(
                    sql.Identifier(key)
                )
            )
            values.append(value.after_s)
            continue
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
        values.append(json_param(value) if key in _JSON_FIELDS else value)
        setattr(step, key, value)
    await conn.execute(fmt("update_step", sets=sql.SQL(", ").join(sets)), [*values, step.row])


async def release_dependents(conn: Conn, run_id: str, step_id: str) -> list[Step]:
    """One fewer pending dependency for each step after ``step_id``; returns them."""
    rows = await fetch_all(conn, Q["release_dependents"], (run_id, step_id))
    return sorted((step_of(r) for r in rows), key=lambda s: s.position)


async def outputs(conn: Conn, run_id: str, step_ids: list[str]) -> dict[str, Any]:
    cur = await conn.execute(Q["outputs"], (run_id, step_ids))
    return {sid: output for sid, output in await cur.fetchall()}


async def sink_outputs(conn: Conn, run_id: str) -> dict[str, Any]:
    """Outputs of the top-level steps nothing depends on: the run's result."""
    cur = await conn.execute(Q["sink_outputs"], (run_id,))
    return {sid: output for sid, output in await cur.fetchall()}


async def child_outputs(conn: Conn, run_id: str, parent: str) -> list[Any]:
    cur = await conn.execute(Q["child_outputs"], (run_id, parent))
    return [r[0] for r in await cur.fetchall()]


async def unfinished_children(conn: Conn, run_id: str, parent: str) -> int:
    return int(await fetch_value(conn, Q["unfinished_children"], (run_id, parent)) or 0)


async def parent_step(conn: Conn, run_id: str, step_id: str) -> Step | None:
    rows = await fetch_all(conn, Q["step_by_id"], (run_id, step_id))
    return step_of(rows[0]) if rows else None


# -- attempts ---------------------------------------------------------------------------
async def claim(
    conn: Conn, tenant_id: uuid.UUID | None, queues: list[str], n: int, lease_s: float, worker_id: str
) -> list[Attempt]:
    """Claims up to ``n`` ready steps; ``tenant_id`` None claims any tenant's (the driver)."""
    tenant = sql.SQL("tenant_id = %(tenant)s") if tenant_id else sql.SQL("true")
    params = {"tenant": tenant_id, "queues": queues, "n": n, "lease": lease_s, "worker": worker_id}
    return [attempt_of(r) for r in await fetch_all(conn, fmt("claim", tenant=tenant), params)]


async def claim_many(
    conn: Conn, claims: list[tuple[uuid.UUID | None, list[str], int, float, str]]
) -> list[list[Attempt]]:
    """``claim`` for each (tenant, queues, n, lease_s, worker), in order, sent together:
    one round trip in pipeline mode; a later claim sees the earlier ones' steps taken."""
    cursors = []
    for tenant_id, queues, n, lease_s, worker_id in claims:
        tenant = sql.SQL("tenant_id = %(tenant)s") if tenant_id else sql.SQL("true")
        params = {
            "tenant": tenant_id,
            "queues": queues,
            "n": n,
            "lease": lease_s,
            "worker": worker_id,
        }
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(fmt("claim", tenant=tenant), params)
        cursors.append(cur)
    return [[attempt_of(r) for r in await cur.fetchall()] for cur in cursors]


async def attempt_row(conn: Conn, tenant_id: uuid.UUID | None, attempt_id: str) -> dict[str, Any] | None:
    rows = await fetch_all(conn, Q["attempt_row"], (attempt_id, tenant_id, tenant_id))
    return rows[0] if rows else None


async def finish_attempt(
    conn: Conn, attempt_id: str, status: str, error: str | None = None
) -> None:
    await conn.execute(Q["finish_attempt"], (status, error, attempt_id))


async def extend_lease(conn: Conn, attempt_id: str, lease_s: float) -> datetime:
    until = await fetch_value(conn, Q["extend_lease"], (lease_s, attempt_id))
    assert isinstance(until, datetime)
    return until


async def cancel_attempts(conn: Conn, run_id: str) -> None:
    await conn.execute(Q["cancel_attempts"], (run_id,))


# -- completions settled together (one statement for the whole batch each) ----------
async def attempt_rows(
    conn: Conn, wanted: list[tuple[str, uuid.UUID | None]]
) -> list[dict[str, Any] | None]:
    """For each (attempt id, tenant or None for any), its attempt row, or None where that
    tenant has no such attempt (another tenant's is None too)."""
    ids, tenants = [a for a, _ in wanted], [t for _, t in wanted]
    found = {r["i"]: r for r in await fetch_all(conn, Q["attempt_rows"], (ids, tenants))}
    return [found.get(i) for i in range(1, len(wanted) + 1)]


async def lock_runs(conn: Conn, run_ids: list[str]) -> dict[str, Run]:
    """Locks the runs in id order (every batch in the same order: no deadlock)."""
    return {r.id: r for r in map(run_of, await fetch_all(conn, Q["lock_runs"], (run_ids,)))}


async def lock_steps(conn: Conn, step_rows: list[str]) -> dict[str, Step]:
    return {s.row: s for s in map(step_of, await fetch_all(conn, Q["lock_steps"], (step_rows,)))}


async def finish_attempts(conn: Conn, attempt_ids: list[str]) -> None:
    await conn.execute(Q["finish_attempts"], (attempt_ids,))


async def complete_steps(conn: Conn, outputs: list[tuple[Step, Any]]) -> None:
    """Records each step's output (the rows only: the caller updates the ``Step``s)."""
    rows, values = [s.row for s, _ in outputs], [json_param(o) for _, o in outputs]
    await conn.execute(Q["complete_steps"], (rows, values))


async def outputs_many(conn: Conn, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """The outputs of the completed steps among (run, step id) pairs."""
    params = ([r for r, _ in wanted], [s for _, s in wanted])
    cur = await conn.execute(Q["outputs_many"], params)
    return {(str(run_id), sid): out for run_id, sid, out in await cur.fetchall()}


async def make_ready(conn: Conn, inputs: list[tuple[Step, Any]]) -> None:
    """Task steps become ready now with their resolved inputs (the ``Step``s too)."""
    rows, values = [s.row for s, _ in inputs], [json_param(i) for _, i in inputs]
    await conn.execute(Q["make_ready"], (rows, values))
    for step, value in inputs:
        step.status, step.input = "ready", value


async def count_completed_many(conn: Conn, deltas: dict[str, int]) -> dict[str, int]:
    params = (list(deltas), list(deltas.values()))
    cur = await conn.execute(Q["count_completed_many"], params)
    return {str(run_id): int(n) for run_id, n in await cur.fetchall()}


async def release_dependents_many(conn: Conn, done: list[tuple[str, str]]) -> list[Step]:
    """One fewer pending dependency per (run, step id) in ``done`` that each top-level step
    waits for; returns the steps changed, in run and position order."""
    params = ([r for r, _ in done], [s for _, s in done])
    rows = await fetch_all(conn, Q["release_dependents_many"], params)
    return sorted((step_of(r) for r in rows), key=lambda s: (s.run_id, s.position))


# -- timers and leases ------------------------------------------------------------------
async def due(conn: Conn, limit: int) -> list[tuple[str, str, str]]:
    """(run, step row, why) for timers that are due and leases that ran out."""
    cur = await conn.execute(Q["due"], (limit, limit))
    return [(str(r), str(s), why) for r, s, why in await cur.fetchall()]


async def next_wakeup(conn: Conn) -> datetime | None:
    found = await fetch_value(conn, Q["next_wakeup"], ())
    return found if isinstance(found, datetime) else None


# -- the execution timeline -------------------------------------------------------------
async def lock_timeline(conn: Conn, run_id: str) -> None:
    """One appender per run at a time, until commit."""
    await conn.execute(Q["lock_timeline"], (f"wf-timeline:{run_id}",))


async def assign_timeline_seq(conn: Conn, run_id: str, step_row: str) -> int:
    """The completed step's place in the run's execution (under the run's lock)."""
    return int(await fetch_value(conn, Q["assign_timeline_seq"], (run_id, step_row)))


async def assign_timeline_seqs(conn: Conn, steps: list[tuple[str, str]]) -> list[int]:
    """``assign_timeline_seq`` for each (run, step row), in order, in one statement."""
    params = ([r for r, _ in steps], [s for _, s in steps])
    cur = await conn.execute(Q["assign_timeline_seqs"], params)
    seqs = {str(row): int(seq) for row, seq in await cur.fetchall()}
    return [seqs[s] for _, s in steps]


async def unappended(conn: Conn, run_id: str) -> list[Step]:
    return [step_of(r) for r in await fetch_all(conn, Q["unappended"], (run_id,))]


async def mark_appended(conn: Conn, step_rows: list[str]) -> None:
    await conn.execute(Q["mark_appended"], (step_rows,))


async def close_timeline(conn: Conn, run_id: str) -> None:
    await conn.execute(Q["close_timeline"], (run_id,))


async def timelines_behind(conn: Conn, limit: int, grace_s: float) -> list[str]:
    """Runs whose execution misses steps completed, or a final status reached, more than
    ``grace_s`` ago."""
    cur = await conn.execute(Q["timelines_behind"], {"limit": limit, "grace": grace_s})
    return [str(r[0]) for r in await cur.fetchall()]


# -- signals ----------------------------------------------------------------------------
async def insert_signal(conn: Conn, tenant_id: uuid.UUID, run_id: str, name: str, payload: Any) -> None:
    await conn.execute(Q["insert_signal"], (tenant_id, run_id, name, Jsonb(payload)))


async def first_signal(conn: Conn, run_id: str, name: str) -> tuple[bool, Any]:
    cur = await conn.execute(Q["first_signal"], (run_id, name))
    row = await cur.fetchone()
    return (True, row[0]) if row else (False, None)


async def waiting_for(conn: Conn, run_id: str, name: str) -> list[Step]:
    return [step_of(r) for r in await fetch_all(conn, Q["waiting_for"], (run_id, name))]
