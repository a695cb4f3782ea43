"""Puts rows that bulk writes left out of pgvector's HNSW graph into it, in the background.

A batch write stores its rows with ``indexed = false`` (migration 0012) so that
the request does not pay for the graph; this worker then flips waiting rows to
``indexed = true`` a few hundred at a time, each batch its own short transaction
that skips rows a writer holds, so several processes can share the work and a
writer never waits behind it. A batch that comes back full is followed at once by
the next; an empty one sends the worker to sleep for the idle interval. Until a
row is flipped, searches rank it exactly beside the graph (see
``memories.repository.vector_search``), so the backlog costs time, not results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from memory_service.db import wrap_db_errors
from memory_service.errors import MemoryServiceError
from memory_service.memories import repository as repo

log = logging.getLogger(__name__)


class VectorIndexWorker:
    def __init__(
        self, pool: AsyncConnectionPool, *, batch_size: int, idle_interval_s: float
    ) -> None:
        self._pool = pool
        self.batch_size = batch_size
        self.idle_interval_s = idle_interval_s
        self.indexed = 0  # rows this worker put into the graph
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgvector-index-worker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def index_batch(self) -> int:
        """Flip one batch of waiting rows; returns how many."""
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            flipped = await repo.index_backlog(conn, self.batch_size)
        self.indexed += flipped
        return flipped

    async def drain(self) -> int:
        """Index every row waiting now; returns how many."""
        total = 0
        while flipped := await self.index_batch():
            total += flipped
        return total

    async def backlog(self) -> int:
        async with wrap_db_errors(), self._pool.connection() as conn:
            return await repo.backlog_size(conn)

    async def _run(self) -> None:
        while True:
            try:
                full = await self.index_batch() >= self.batch_size
            except MemoryServiceError as exc:
                log.warning("pgvector index worker skipped a batch: %s", exc.detail)
                full = False
            await asyncio.sleep(0 if full else self.idle_interval_s)
