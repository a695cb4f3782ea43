"""Event operations: ingest a batch, list with filters, and stream live with resumption.

A stream is a loop over the database, not over messages: it reads the matching
events after the last one it delivered, then sleeps until the fan-out says the
tenant has new events (or a heartbeat interval passes). Because a stream always
reads from its own last position, reconnecting with ``Last-Event-ID`` resumes
exactly where it stopped, and wake-ups from other processes need to carry no data.
Every read first moves the tenant's staged events out of the outbox (see
``memory_service.events.outbox``), so a change a client saw committed has its
events in the log by the time the client reads it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge, Unavailable
from memory_service.events import outbox, store
from memory_service.events.fanout import EventFanout
from memory_service.events.models import Event, EventQuery, NewEvent, validate_event
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.infra.telemetry import current_trace_id

log = logging.getLogger(__name__)
MAX_LIST_LIMIT = 1000
STREAM_READ = 500
MAX_SEQ = 2**63 - 1


def parse_event_id(raw: str | None, field: str = "Last-Event-ID") -> int | None:
    """An event number a stream sent (ASCII digits, spaces around allowed), or None."""
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_SEQ:
        raise InvalidInput(
            f"{field} must be the id of an event this stream sent",
            errors=[FieldError(field, "an event sequence number")],
        )
    return int(text)


class EventService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        fanout: EventFanout,
        *,
        max_batch: int = 1000,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self.fanout = fanout
        self.max_batch = max_batch
        self.heartbeat_seconds = heartbeat_seconds

    async def record(self, tenant_id: uuid.UUID, events: Sequence[NewEvent]) -> list[Event]:
        """Validate every event, then store them all in one transaction (all or nothing)."""
        if not events:
            raise InvalidInput("items must not be empty", errors=[FieldError("items", "empty")])
        if len(events) > self.max_batch:
            raise PayloadTooLarge(
                f"a batch holds at most {self.max_batch} events, not {len(events)}",
                errors=[FieldError("items", f"at most {self.max_batch}")],
            )
        trace_id = current_trace_id()
        checked = [validate_event(e, f"items[{i}].", trace_id) for i, e in enumerate(events)]
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            return await store.insert_batch(conn, tenant_id, checked)

    async def list(
        self, tenant_id: uuid.UUID, query: EventQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Event]:
        """Oldest first; the cursor is the last seq returned."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                errors=[FieldError("limit", "range")],
            )
        query.validate()
        after = 0
        if cursor:
            position = self.cursors.decode(cursor, "events", tenant_id)
            if not isinstance(position, int):
                raise InvalidInput(
                    "cursor is not valid for this listing",
                    errors=[FieldError("cursor", "malformed")],
                )
            after = position
        async with wrap_db_errors(), self.pool.connection() as conn:
            await outbox.settle(conn, tenant_id)
            rows = await store.read_after(conn, tenant_id, query, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            self.cursors.encode("events", tenant_id, rows[-1].seq) if more and rows else None
        )
        return Page(rows, next_cursor)

    async def recent(
        self, tenant_id: uuid.UUID, query: EventQuery, limit: int = 50
    ) -> Sequence[Event]:
        """The newest matching events, oldest first: where a live tail starts reading."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                errors=[FieldError("limit", "range")],
            )
        query.validate()
        async with wrap_db_errors(), self.pool.connection() as conn:
            await outbox.settle(conn, tenant_id)
            return await store.read_latest(conn, tenant_id, query, limit)

    async def last_number(self, tenant_id: uuid.UUID) -> int:
        """The number of the tenant's newest event: what a client resumes a stream after."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            await outbox.settle(conn, tenant_id)
            return await store.last_number(conn, tenant_id)

    async def stream_start(self, tenant_id: uuid.UUID, after: int | None) -> int:
        """The seq a new stream starts after: the event numbered ``after`` (a client's
        Last-Event-ID, see ``parse_event_id``), or now (only new events)."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            await outbox.settle(conn, tenant_id)  # staged before the stream began: not new
            if after is not None:
                return await store.seq_of_number(conn, tenant_id, after)
            return await store.last_seq(conn, tenant_id)

    async def stream(
        self, tenant_id: uuid.UUID, query: EventQuery, after_seq: int
    ) -> AsyncIterator[Event | None]:
        """Matching events as they commit; ``None`` is a heartbeat (nothing new for a while).

        While the database is away the stream keeps heartbeating and resumes from
        its position when it returns.
        """
        tid = tenant_id
        subscription = self.fanout.subscribe(tenant_id)
        try:
            while not subscription.closed:
                subscription.clear()
                try:
                    async with wrap_db_errors(), self.pool.connection() as conn:
                        await outbox.settle(conn, tid)
                        rows = await store.read_after(conn, tid, query, after_seq, STREAM_READ)
                except Unavailable as exc:
                    log.info("event stream waiting for the database: %s", exc.detail)
                    rows = []
                    yield None
                    await asyncio.sleep(min(self.heartbeat_seconds, 1.0))
                    continue
                for event in rows:
                    yield event
                    after_seq = event.seq
                if len(rows) == STREAM_READ:
                    continue
                if not await subscription.wait(self.heartbeat_seconds):
                    yield None
        finally:
            subscription.close()
