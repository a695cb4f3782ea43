"""Removes events older than the configured retention, in the background.

Deletes run in small batches, each its own short transaction that skips rows
another process is already deleting, so writers never wait behind a big delete
and several processes can prune the same database at once.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import MemoryServiceError
from memory_service.events import store
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)


class RetentionWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        retention_seconds: float,
        interval_seconds: float,
        batch_size: int,
        supervisor: Supervisor,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        self.retention_seconds = retention_seconds
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self._loop: Loop | None = None
        self.deleted = 0
        self.runs = 0

    def start(self) -> None:
        self._loop = self._supervisor.spawn("event-retention", self._run)

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def prune_once(self) -> int:
        """Delete every expired event, batch by batch; returns how many went."""
        total = 0
        while True:
            async with (
                wrap_db_errors(),
                self._pool.connection() as conn,
                conn.transaction(),
            ):
                deleted = await store.prune_batch(conn, self.retention_seconds, self.batch_size)
            total += deleted
            if deleted < self.batch_size:
                break
            await asyncio.sleep(0)  # let request handlers in between batches
        self.deleted += total
        self.runs += 1
        return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                removed = await self.prune_once()
                if removed:
                    log.info("event retention removed %d events", removed)
            except MemoryServiceError as exc:
                log.warning("event retention skipped a run: %s", exc.detail)
