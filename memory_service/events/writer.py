"""The background writer for the service's own events (memory added, task changed, ...).

``emit`` queues an event and returns at once, so recording never sits on a
request's critical path; a background task writes queued events in batches.
When the database is away the writer keeps the batch and retries with back-off
instead of dropping it. Only a full queue (the producer outruns the database for
long) makes ``emit`` wait, and only a shutdown with the database still away
loses events; both are counted and logged, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from memory_service.db import wrap_db_errors
from memory_service.errors import MemoryServiceError, Unavailable
from memory_service.events import store
from memory_service.events.models import NewEvent
from memory_service.telemetry import current_trace_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Queued:
    tenant_id: uuid.UUID
    event: NewEvent


class EventWriter:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.0,
    ) -> None:
        self._pool = pool
        # how long the first queued event waits for company, so that a steady trickle
        # (one event per search) is written in batches rather than one transaction each
        self.linger_s = linger_s
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[_Queued] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.dropped = 0
        self.retries = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-writer")

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._in_flight)

    async def emit(
        self, tenant_id: uuid.UUID, type: str, *, severity: str = "info", **fields: Any
    ) -> None:
        """Queue one event; the trace id of the current request goes with it."""
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lost = self.pending
        if lost:
            self.dropped += lost
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
        """Write the in-flight batch; each tenant's part leaves it once committed."""
        by_tenant: dict[uuid.UUID, list[NewEvent]] = defaultdict(list)
        for item in self._in_flight:
            by_tenant[item.tenant_id].append(item.event)
        # one transaction per tenant, in a fixed order, so tenant locks never deadlock
        for tenant_id in sorted(by_tenant):
            events = by_tenant[tenant_id]
            try:
                async with (
                    wrap_db_errors(),
                    self._pool.connection() as conn,
                    conn.transaction(),
                ):
                    await store.insert_batch(conn, tenant_id, events)
                self.written += len(events)
            except Unavailable:
                raise
            except MemoryServiceError as exc:
                # a deleted tenant or a value the database refuses: retrying cannot help
                self.dropped += len(events)
                log.error(
                    "dropped %d service events of tenant %s: %s", len(events), tenant_id, exc.detail
                )
            self._in_flight = [q for q in self._in_flight if q.tenant_id != tenant_id]
