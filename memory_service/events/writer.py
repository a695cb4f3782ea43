"""The background writer for the service's own events (memory added, task changed, ...).

``emit`` queues an event and returns at once, so recording never sits on a
request's critical path; a background task (the supervised loop
``event-writer``) writes queued events in batches, one transaction per tenant.
When the database is away the writer keeps the batch and retries with back-off
instead of dropping it. A tenant's part of a batch that fails for any other
reason is written again event by event, so an event that cannot be written (the
database refuses a value, the tenant was deleted, or a bug) is dropped alone and
its batch-mates are written. Only a full queue (the producer outruns the
database for long) makes ``emit`` wait; dropped events are counted by reason
(``refused``, ``poison``, ``shutdown``: a shutdown with the database still
away) and logged, never silent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from memory_service.errors import MemoryServiceError, Unavailable
from memory_service.events import store
from memory_service.events.models import NewEvent
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop, Supervisor
from memory_service.infra.telemetry import current_trace_id

log = logging.getLogger(__name__)
DROP_REASONS = ("refused", "poison", "shutdown")


@dataclass(eq=False, slots=True)  # compared by identity: two equal events are two events
class _Queued:
    tenant_id: uuid.UUID
    event: NewEvent


class EventWriter:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        supervisor: Supervisor,
        queue_size: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.0,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        # how long the first queued event waits for company, so that a steady trickle
        # (one event per search) is written in batches rather than one transaction each
        self.linger_s = linger_s
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._loop: Loop | None = None
        self._in_flight: list[_Queued] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.dropped_by: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.retries = 0

    def start(self) -> None:
        self._loop = self._supervisor.spawn("event-writer", self._run)

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._in_flight)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by.values())

    async def emit(
        self, tenant_id: uuid.UUID, type: str, *, severity: str = "info", **fields: Any
    ) -> None:
        """Queue one event; the trace id of the current request goes with it."""
        if not isinstance(tenant_id, uuid.UUID):
            # tenant ids are parsed once at the edge; a string here is a caller's bug,
            # reported where it is made rather than in a batch of other events
            raise TypeError(f"a tenant id must be a UUID, not {_type_name(tenant_id)}")
        fields.setdefault("trace_id", current_trace_id())
        fields.setdefault("source", "memory-service")
        event = NewEvent(type=type, severity=severity, **fields)
        event.ts = event.ts or datetime.now(UTC)
        self._idle.clear()
        await self._queue.put(_Queued(tenant_id, event))

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        try:
            await asyncio.wait_for(self._wait_idle(), timeout)
        except TimeoutError:
            return False
        return True

    async def _wait_idle(self) -> None:
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:
        await self.flush(timeout)
        if self._loop is not None:
            await self._loop.stop()
        lost = self.pending
        if lost:
            self.dropped_by["shutdown"] += lost
            log.error("shutting down with %d service events not written (database away)", lost)

    async def _run(self) -> None:
        delay = 0.2
        while True:
            if not self._in_flight:
                # in flight at once: a flush during the linger must still wait for it
                self._in_flight = [await self._queue.get()]
                if self.linger_s > 0:
                    await asyncio.sleep(self.linger_s)
                while len(self._in_flight) < self._batch_size and not self._queue.empty():
                    self._in_flight.append(self._queue.get_nowait())
            try:
                await self._write()
            except Unavailable as exc:
                self.retries += 1
                log.warning("service events not written yet (%s); retrying", exc.detail)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            if self._queue.empty():
                self._idle.set()

    async def _write(self) -> None:
        """Write the in-flight batch; each tenant's part leaves it once committed.

        A part that fails for any reason but an outage is written again event by event,
        so that one event the database (or a bug) refuses costs only itself."""
        by_tenant: dict[uuid.UUID, list[_Queued]] = defaultdict(list)
        for item in self._in_flight:
            by_tenant[item.tenant_id].append(item)
        # one transaction per tenant, in a fixed order, so tenant locks never deadlock
        # (by text: the same order as by UUID)
        for tenant_id in sorted(by_tenant, key=str):
            items = by_tenant[tenant_id]
            try:
                await self._insert(tenant_id, [q.event for q in items])
                self.written += len(items)
            except Exception as exc:
                if isinstance(exc, Unavailable) and outage(exc):
                    raise
                log.warning(
                    "writing %d service events of tenant %s failed (%s); writing them one by one",
                    len(items),
                    tenant_id,
                    type(exc).__name__,
                )
                await self._write_singly(items)
            self._in_flight = [q for q in self._in_flight if q.tenant_id != tenant_id]

    async def _write_singly(self, items: list[_Queued]) -> None:
        for item in items:
            try:
                await self._insert(item.tenant_id, [item.event])
                self.written += 1
            except Unavailable as exc:
                if outage(exc):
                    raise  # the ones before it have left the batch; the rest wait
                self._drop(item, "refused", exc.detail)
            except MemoryServiceError as exc:
                # a deleted tenant or a value the database refuses: retrying cannot help
                self._drop(item, "refused", exc.detail)
            except Exception as exc:  # a bug: the traceback goes with it
                self._drop(item, "poison", type(exc).__name__, exc)
            self._in_flight.remove(item)

    async def _insert(self, tenant_id: uuid.UUID, events: list[NewEvent]) -> None:
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            await store.insert_batch(conn, tenant_id, events)

    def _drop(self, item: _Queued, reason: str, why: str, error: Exception | None = None) -> None:
        self.dropped_by[reason] += 1
        log.error(
            "dropped a %s service event of tenant %s (%s): %s",
            item.event.type,
            item.tenant_id,
            reason,
            why,
            exc_info=error,
        )


def outage(exc: Unavailable) -> bool:
    """Whether the database is away (retry the batch later) rather than refusing this
    batch with an error it has no name for (which retrying would repeat forever)."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.Error):
        return isinstance(
            cause, psycopg.OperationalError | pg_errors.AdminShutdown | pg_errors.QueryCanceled
        )
    return True  # a pool timeout, an open circuit, or the database's own 503


def _type_name(value: object) -> str:
    return type(value).__name__
