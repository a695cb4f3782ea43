"""The event outbox: events staged in the transaction of their change, moved into the log after.

A workflow transition calls ``stage`` with its progress events: one INSERT into
``event_outbox``, with no tenant lock and no counter, so the transitions of one
tenant no longer wait for each other's commits. ``move_tenant`` takes the
tenant's event lock, deletes the tenant's oldest staged events and writes them
with ``store.insert_batch`` (its numbers, its NOTIFY), all in one transaction.
Since the lock comes before the read, movers in any number of processes move a
tenant's events one batch at a time, in outbox order, each exactly once; and a
transition that saw another's change committed after it, so staged its events
with higher seqs. An event is therefore staged exactly when its change commits
and reaches the log once, after the events of the changes it followed.

``OutboxMover`` is the supervised loop ``event-outbox``: this process's
transitions wake it after they commit, naming their tenants (it waits
``MOVE_DELAY_S`` for the commits right behind to join the move), and it looks every
``poll_interval_s`` (and after a failure) for what other processes, or one that
died between commit and move, left. It drains on start and once more on close. A
reader calls ``settle`` before reading a tenant's log, so whoever saw a change
committed also finds its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from memory_service.errors import Unavailable
from memory_service.events import store
from memory_service.events.models import SEVERITIES, NewEvent
from memory_service.events.writer import outage
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)
_CHUNK = 200
# how long a move that a commit woke waits for more commits to join it (measured on two
# cores, eight workflow workers running diamonds: a step's CPU 4.4-5.2 -> 3.8-4.4 ms,
# steps/s about +10 %; chains unchanged within the noise)
MOVE_DELAY_S = 0.02
_STAGE = (
    "INSERT INTO event_outbox (tenant_id, type, severity, source, ts, trace_id, execution_id, "
    "attributes) SELECT v.tenant_id, v.type, v.severity, v.source, "
    "coalesce(v.ts, statement_timestamp()), v.trace_id, v.execution_id, v.attributes "
    "FROM unnest(%s::uuid[], %s::text[], %s::smallint[], %s::text[], %s::timestamptz[], "
    "%s::text[], %s::text[], %s::jsonb[]) WITH ORDINALITY AS v (tenant_id, type, severity, "
    "source, ts, trace_id, execution_id, attributes, ord) ORDER BY v.ord"
)


async def stage(
    conn: AsyncConnection[Any],
    events: Mapping[uuid.UUID, Sequence[NewEvent]],
    ts: datetime | None = None,
) -> None:
    """Stage events in the caller's transaction; ``ts`` (or the statement's time) when
    an event has none of its own."""
    rows = [(tenant_id, e) for tenant_id, batch in events.items() for e in batch]
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        # one statement of arrays: the same text for any number of rows, so each
        # connection parses and plans it once (a VALUES list of n rows is a new statement
        # for every n); ordinality keeps the outbox's seq in the events' order
        await conn.execute(
            _STAGE,
            (
                [tenant_id for tenant_id, _ in chunk],
                [e.type for _, e in chunk],
                [SEVERITIES.index(e.severity) for _, e in chunk],
                [e.source for _, e in chunk],
                [e.ts or ts for _, e in chunk],
                [e.trace_id for _, e in chunk],
                [e.execution_id for _, e in chunk],
                [Jsonb(e.attributes) for _, e in chunk],
            ),
        )


async def pending_tenants(conn: AsyncConnection[Any], limit: int) -> list[uuid.UUID]:
    """Tenants with staged events, the longest waiting first."""
    cur = await conn.execute(
        "SELECT tenant_id FROM event_outbox GROUP BY tenant_id ORDER BY min(seq) LIMIT %s",
        (limit,),
    )
    return [row[0] for row in await cur.fetchall()]


async def move_tenant(conn: AsyncConnection[Any], tenant_id: uuid.UUID, limit: int) -> int:
    """Move up to ``limit`` of the tenant's oldest staged events into the log; the caller
    owns the transaction. Returns how many moved."""
    await store.lock_tenant(conn, tenant_id)  # before the read: one mover per tenant
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "DELETE FROM event_outbox WHERE seq IN (SELECT seq FROM event_outbox "
        "WHERE tenant_id = %s ORDER BY seq LIMIT %s) "
        "RETURNING seq, type, severity, source, ts, trace_id, execution_id, attributes",
        (tenant_id, limit),
    )
    rows = sorted(await cur.fetchall(), key=lambda r: r["seq"])
    if rows:
        await store.insert_batch(conn, tenant_id, [_event(r) for r in rows])
    return len(rows)


async def settle(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> int:
    """Move whatever the tenant has staged now (a reader's read-your-writes); ``conn``
    must not be in a transaction. Costs one indexed look-up when nothing is staged."""
    moved = 0
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM event_outbox WHERE tenant_id = %s)", (tenant_id,)
        )
        row = await cur.fetchone()
        if row and row[0]:
            while (n := await move_tenant(conn, tenant_id, 1000)) == 1000:
                moved += n
            moved += n
    return moved


def _event(r: dict[str, Any]) -> NewEvent:
    return NewEvent(
        type=r["type"],
        severity=SEVERITIES[r["severity"]],
        source=r["source"],
        ts=r["ts"],
        trace_id=r["trace_id"],
        execution_id=r["execution_id"],
        attributes=r["attributes"],
    )


class OutboxMover:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        supervisor: Supervisor,
        poll_interval_s: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._touched: set[uuid.UUID] = set()  # tenants this process staged events of
        self._loop: Loop | None = None
        self.moved = 0
        self.moves = 0  # transactions that moved events
        self.retries = 0  # passes that found the database away

    def start(self) -> None:
        self._loop = self._supervisor.spawn("event-outbox", self._run)

    def touched(self, tenant_ids: Iterable[uuid.UUID]) -> None:
        """A transition of this process staged events of these tenants and committed."""
        self._touched.update(tenant_ids)
        self._wake.set()

    async def close(self) -> None:
        """Stop the loop and move what is left; what cannot move stays staged for the
        next process to start."""
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        try:
            await self.drain()
        except Exception as exc:  # the rows stay in the outbox: nothing is lost
            log.warning("staged events left in the outbox at shutdown (%s)", type(exc).__name__)

    async def drain(self) -> int:
        """Move everything staged, tenant by tenant, one transaction per batch."""
        moved = 0
        while True:
            async with wrap_db_errors(), self._pool.connection() as conn:
                tenants = await pending_tenants(conn, 100)
            n = await self._move(tenants)
            moved += n
            if n < self.batch_size and len(tenants) < 100:
                return moved

    async def _move(self, tenants: Iterable[uuid.UUID]) -> int:
        """Move these tenants' staged events; the most any one batch moved, so a caller
        sees whether a tenant may have more."""
        fullest = 0
        for tenant_id in sorted(tenants, key=str):
            while True:
                # pipelined: the lock, the insert and NOTIFY need no round trip of their own
                async with (
                    wrap_db_errors(),
                    self._pool.connection() as conn,
                    conn.pipeline(),
                    conn.transaction(),
                ):
                    n = await move_tenant(conn, tenant_id, self.batch_size)
                self.moved += n
                self.moves += 1 if n else 0
                fullest = max(fullest, n)
                if n < self.batch_size:
                    break
        return fullest

    async def _run(self) -> None:
        delay = 0.2
        looked = -math.inf  # at start: whatever a stopped process left
        while True:
            self._wake.clear()
            touched, self._touched = self._touched, set()
            try:
                # every poll interval, even while this process's commits keep it busy
                if time.monotonic() - looked >= self.poll_interval_s:
                    looked = time.monotonic()
                    await self.drain()
                else:  # this process's own commits: no need to look for the tenants
                    await self._move(touched)
            except Unavailable as exc:
                self._touched |= touched
                if not outage(exc):
                    raise  # not the database being away: the supervisor logs and restarts
                self.retries += 1
                log.warning("staged events not moved yet (%s); retrying", exc.detail)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            if self._wake.is_set():
                # woken by a commit: the transitions committing just after it join this
                # move (one transaction for several steps' events), and the move stays
                # off the CPU while the worker that committed claims its next step
                await asyncio.sleep(MOVE_DELAY_S)
