"""All event SQL: ordered batch inserts with NOTIFY, filtered keyset reads, pruning.

Inserts for one tenant take a transaction-scoped advisory lock before the rows get
their ``seq`` and their per-tenant ``number`` (what the API shows: a global seq
would tell a tenant how busy everyone else is), and hold it until commit. Within a tenant, seq order is therefore
commit order, so a reader that has seen seq N will never later find a new row
below N; resumable streams and keyset pages depend on it. The same transaction
sends ``NOTIFY memory_events, '<tenant id>'``, delivered on commit to every
process listening on this database.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.events.models import SEVERITIES, Event, EventQuery, NewEvent

CHANNEL = "memory_events"
_LOCK_CLASS = 0x65766E74  # "evnt"
COLUMNS = sql.SQL(
    "seq, number, id, type, severity, source, ts, received_at, trace_id, span_id, task_id, "
    "execution_id, agent_id, duration_ms, attributes"
)


async def insert_batch(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, events: Sequence[NewEvent]
) -> list[Event]:
    """Insert one tenant's events in order; the caller owns the transaction.

    An event that names an ``id`` this tenant already holds (or one named earlier in
    the batch) is left out: it is already there. The rows inserted come back.
    """
    await lock_tenant(conn, tenant_id)
    # under the lock, so two imports of one export cannot both find an id free
    events = await _not_yet_held(conn, tenant_id, events)
    if not events:
        return []
    # this tenant's own numbers for the batch (the lock above keeps them in commit order)
    counter = await conn.execute(
        "INSERT INTO event_numbers AS n (tenant_id, last) VALUES (%s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET last = n.last + EXCLUDED.last RETURNING last",
        (tenant_id, len(events)),
    )
    last = await counter.fetchone()
    first = int(last[0]) - len(events) + 1 if last else 1
    # one statement of arrays for the whole batch: the same text whatever its size, so
    # it is parsed and planned once per connection (a VALUES list of n rows is a new
    # statement for every n); ordinality keeps seq in input order
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "INSERT INTO events (tenant_id, id, type, severity, source, ts, trace_id, "
            "span_id, task_id, execution_id, agent_id, duration_ms, attributes, number) "
            "SELECT %s, coalesce(v.id, gen_random_uuid()), v.type, v.severity, v.source, v.ts, "
            "v.trace_id, v.span_id, v.task_id, v.execution_id, v.agent_id, v.duration_ms, "
            "v.attributes, %s + v.ord - 1 "
            "FROM unnest(%s::uuid[], %s::text[], %s::smallint[], %s::text[], %s::timestamptz[], "
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], "
            "%s::jsonb[]) WITH ORDINALITY AS v (id, type, severity, source, ts, trace_id, "
            "span_id, task_id, execution_id, agent_id, duration_ms, attributes, ord) "
            "ORDER BY v.ord RETURNING {out}"
        ).format(out=COLUMNS),
        (
            tenant_id,
            first,
            [e.id for e in events],
            [e.type for e in events],
            [SEVERITIES.index(e.severity) for e in events],
            [e.source for e in events],
            [e.ts for e in events],
            [e.trace_id for e in events],
            [e.span_id for e in events],
            [e.task_id for e in events],
            [e.execution_id for e in events],
            [e.agent_id for e in events],
            [e.duration_ms for e in events],
            [Jsonb(e.attributes) for e in events],
        ),
    )
    rows = [_event(r) for r in await cur.fetchall()]
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(tenant_id)))
    rows.sort(key=lambda e: e.seq)
    return rows


async def lock_tenant(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> None:
    """The tenant's event lock, held until the caller's transaction ends (re-entrant)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, str(tenant_id))
    )


async def held_ids(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these event ids the tenant already holds."""
    if not ids:
        return set()
    cur = await conn.execute(
        "SELECT id FROM events WHERE tenant_id = %s AND id = ANY(%s::uuid[])",
        (tenant_id, list(ids)),
    )
    return {row[0] for row in await cur.fetchall()}


async def _not_yet_held(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, events: Sequence[NewEvent]
) -> Sequence[NewEvent]:
    named = [e.id for e in events if e.id is not None]
    if not named:
        return events
    seen = await held_ids(conn, tenant_id, named)
    fresh: list[NewEvent] = []
    for e in events:
        if e.id is None:
            fresh.append(e)
        elif e.id not in seen:
            seen.add(e.id)
            fresh.append(e)
    return fresh


def _where(
    tenant_id: uuid.UUID, query: EventQuery, after_seq: int
) -> tuple[sql.Composable, list[Any]]:
    where: list[sql.Composable] = [sql.SQL("tenant_id = %s AND seq > %s")]
    params: list[Any] = [tenant_id, after_seq]
    if query.types:
        alternatives: list[sql.Composable] = []
        for prefix in query.types:
            if prefix.endswith("."):
                alternatives.append(sql.SQL("type LIKE %s"))
                params.append(_escape_like(prefix) + "%")
            else:
                alternatives.append(sql.SQL("(type = %s OR type LIKE %s)"))
                params += [prefix, _escape_like(prefix) + ".%"]
        where.append(sql.SQL("({})").format(sql.SQL(" OR ").join(alternatives)))
    if query.min_severity is not None:
        where.append(sql.SQL("severity >= %s"))
        params.append(SEVERITIES.index(query.min_severity))
    for name in ("task_id", "execution_id", "agent_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
            params.append(value)
    if query.workflow_run_id is not None:
        where.append(sql.SQL("attributes ->> 'workflow_run_id' = %s"))
        params.append(query.workflow_run_id)
    if query.since is not None:
        where.append(sql.SQL("ts >= %s"))
        params.append(query.since)
    if query.until is not None:
        where.append(sql.SQL("ts < %s"))
        params.append(query.until)
    return sql.SQL(" AND ").join(where), params


async def read_after(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    query: EventQuery,
    after_seq: int,
    limit: int,
) -> list[Event]:
    """Matching events with seq above ``after_seq``, oldest first."""
    where, params = _where(tenant_id, query, after_seq)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {out} FROM events WHERE {where} ORDER BY seq LIMIT %s").format(
            out=COLUMNS, where=where
        ),
        [*params, limit],
    )
    return [_event(r) for r in await cur.fetchall()]


async def seq_of_number(conn: AsyncConnection[Any], tenant_id: uuid.UUID, number: int) -> int:
    """The global seq of the tenant's last event numbered at most ``number`` (0: none)."""
    cur = await conn.execute(
        "SELECT seq FROM events WHERE tenant_id = %s AND number <= %s "
        "ORDER BY number DESC LIMIT 1",
        (tenant_id, number),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def read_latest(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, query: EventQuery, limit: int
) -> list[Event]:
    """The newest ``limit`` matching events, oldest first (the tail of the log)."""
    where, params = _where(tenant_id, query, 0)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {out} FROM events WHERE {where} ORDER BY seq DESC LIMIT %s").format(
            out=COLUMNS, where=where
        ),
        [*params, limit],
    )
    return [_event(r) for r in reversed(await cur.fetchall())]


async def last_number(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> int:
    """The tenant's newest event number (0: none yet)."""
    cur = await conn.execute(
        "SELECT coalesce(max(number), 0) FROM events WHERE tenant_id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def last_seq(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> int:
    cur = await conn.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE tenant_id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def prune_batch(conn: AsyncConnection[Any], older_than_seconds: float, batch: int) -> int:
    """Delete up to ``batch`` of the oldest expired events; short, so writers never wait."""
    cur = await conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
        "WHERE received_at < clock_timestamp() - make_interval(secs => %s) "
        "ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)",
        (older_than_seconds, batch),
    )
    return cur.rowcount


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _event(row: dict[str, Any]) -> Event:
    return Event(
        seq=row["seq"],
        number=row["number"],
        id=str(row["id"]),
        type=row["type"],
        severity=SEVERITIES[row["severity"]],
        source=row["source"],
        ts=row["ts"],
        received_at=row["received_at"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        task_id=row["task_id"],
        execution_id=row["execution_id"],
        agent_id=row["agent_id"],
        duration_ms=row["duration_ms"],
        attributes=row["attributes"],
    )
