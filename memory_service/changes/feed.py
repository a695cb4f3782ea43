"""The change feed service: read pages, stream live, take snapshots, prune the log.

A cursor is the seq of the last change a client has, signed and bound to its
tenant. Because change rows are numbered at commit under a per-tenant lock (see
migration 0009), ``seq > cursor`` never misses a change that commits later, so
pages, streams and reconnects deliver every change exactly once. Streams are a
loop over the database woken by LISTEN/NOTIFY on ``change_feed`` (any process
that writes wakes every process that streams); a lost wake-up costs latency,
never a change. A cursor below what retention removed for the tenant is
``Gone``: the client takes a snapshot, which comes with the cursor to follow.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from memory_service.changes import store
from memory_service.changes.store import ENTITY_TABLES, Change, Entity
from memory_service.errors import FieldError, Gone, InvalidInput, MemoryServiceError, Unavailable
from memory_service.events.fanout import EventFanout
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec
from memory_service.infra.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)
CURSOR_KIND = "changes"
MAX_LIMIT = 5000
STREAM_READ = 500
PRUNE_BATCH = 5000
TYPE_NAMES = {**{t: t for t in ENTITY_TABLES}, **{table: t for t, table in ENTITY_TABLES.items()}}


@dataclass(frozen=True, slots=True)
class ChangePage:
    items: list[Change]
    cursor: str  # where to continue from (the last change returned, or the one given)
    has_more: bool


@dataclass(frozen=True, slots=True)
class SnapshotStart:
    cursor: str  # follow the feed from here to stay current after the snapshot
    types: list[str]


def parse_types(raw: Sequence[str] | None) -> list[str]:
    """Entity type names (singular or plural, repeatable or comma-separated); left out:
    all. Each ``types`` given names at least one."""
    if raw is None or len(raw) == 0:
        return list(ENTITY_TABLES)
    names = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    if any(not any(part.strip() for part in item.split(",")) for item in raw):
        raise InvalidInput(
            "types names no entity type; leave it out for all of them",
            errors=[FieldError("types", f"one or more of {', '.join(ENTITY_TABLES)}")],
        )
    unknown = [n for n in names if n not in TYPE_NAMES]
    if unknown:
        raise InvalidInput(
            f"unknown entity type {unknown[0]!r}; known: {', '.join(ENTITY_TABLES)}",
            errors=[FieldError("types", f"one of {', '.join(ENTITY_TABLES)}")],
        )
    return sorted({TYPE_NAMES[n] for n in names}, key=list(ENTITY_TABLES).index)


class ChangeFeed:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        database_url: str,
        *,
        retention_seconds: float,
        prune_interval_seconds: float,
        heartbeat_seconds: float,
        supervisor: Supervisor,
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self._supervisor = supervisor
        self.fanout = EventFanout(
            database_url, supervisor=supervisor, channel=store.CHANNEL, name="change-feed-fanout"
        )
        self.retention_seconds = retention_seconds
        self.prune_interval_seconds = prune_interval_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._pruner: Loop | None = None

    async def start(self) -> None:
        await self.fanout.start()
        self._pruner = self._supervisor.spawn("change-feed-retention", self._prune_forever)

    async def close(self) -> None:
        if self._pruner is not None:
            await self._pruner.stop()
        await self.fanout.close()

    def cursor_of(self, tenant_id: uuid.UUID, seq: int) -> str:
        return self.cursors.encode(CURSOR_KIND, tenant_id, seq)

    async def position(self, tenant_id: uuid.UUID, cursor: str | None, *, field: str) -> int:
        """The seq a cursor stands for, checked against retention; no cursor: now."""
        tid = tenant_id
        if cursor is None:
            async with wrap_db_errors(), self.pool.connection() as conn:
                return await store.last_seq(conn, tid)
        position = self.cursors.decode(cursor, CURSOR_KIND, tenant_id)
        if not isinstance(position, int) or position < 0:
            raise InvalidInput(
                "not a change-feed cursor", errors=[FieldError(field, "malformed")]
            )
        async with wrap_db_errors(), self.pool.connection() as conn:
            pruned = await store.pruned_through(conn, tid)
        if position < pruned:
            raise Gone(
                "this cursor is older than the change log's retention, so changes after it "
                "are no longer kept: take a snapshot (GET /v1/changes/snapshot) and follow "
                "the feed from the cursor it returns"
            )
        return position

    async def read(
        self,
        tenant_id: uuid.UUID,
        since: str | None,
        types: list[str],
        *,
        limit: int = 100,
        with_embedding: bool = False,
    ) -> ChangePage:
        """Changes after ``since`` (from the oldest kept when none) in commit order."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIMIT}", errors=[FieldError("limit", "range")]
            )
        after = 0 if since is None else await self.position(tenant_id, since, field="since")
        if since is None:
            async with wrap_db_errors(), self.pool.connection() as conn:
                if await store.pruned_through(conn, tenant_id) > 0:
                    raise Gone(
                        "the change log no longer holds this tenant's first changes: take a "
                        "snapshot (GET /v1/changes/snapshot) and follow the feed from its cursor"
                    )
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await store.read_after(
                conn, tenant_id, after, types, limit + 1, with_embedding=with_embedding
            )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].seq if rows else after
        return ChangePage(rows, self.cursor_of(tenant_id, last), more)

    async def stream(
        self, tenant_id: uuid.UUID, after: int, types: list[str], *, with_embedding: bool = False
    ) -> AsyncIterator[Change | None]:
        """Changes as they commit; ``None`` is a heartbeat. Survives database outages."""
        tid = tenant_id
        subscription = self.fanout.subscribe(tenant_id)
        try:
            while not subscription.closed:
                subscription.clear()
                try:
                    async with wrap_db_errors(), self.pool.connection() as conn:
                        rows = await store.read_after(
                            conn, tid, after, types, STREAM_READ, with_embedding=with_embedding
                        )
                except Unavailable as exc:
                    log.info("change stream waiting for the database: %s", exc.detail)
                    yield None
                    await asyncio.sleep(min(self.heartbeat_seconds, 1.0))
                    continue
                for change in rows:
                    yield change
                    after = change.seq
                if len(rows) == STREAM_READ:
                    continue
                if not await subscription.wait(self.heartbeat_seconds):
                    yield None
        finally:
            subscription.close()

    async def snapshot(
        self, tenant_id: uuid.UUID, types: list[str], *, with_embedding: bool = False
    ) -> AsyncIterator[SnapshotStart | Entity]:
        """The tenant's current entities as of one database snapshot, after a
        ``SnapshotStart`` whose cursor continues the feed exactly after it."""
        tid = tenant_id
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield SnapshotStart(self.cursor_of(tenant_id, await store.last_seq(conn, tid)), types)
            for entity_type in types:
                async for entity in store.snapshot_rows(
                    conn, tid, entity_type, with_embedding=with_embedding
                ):
                    yield entity

    async def prune_once(self, now: datetime | None = None) -> int:
        """Remove changes older than the retention; returns how many went."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.retention_seconds)
        total = 0
        while True:
            async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
                deleted = await store.prune_batch(conn, cutoff, PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval_seconds)
            try:
                await self.prune_once()
            except MemoryServiceError as exc:
                log.warning("could not prune the change log: %s", exc.detail)
