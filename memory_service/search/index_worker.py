"""Puts rows that bulk writes left out of pgvector's HNSW graph into it, in the background.

A batch write stores its rows with ``indexed = false`` (migration 0012) so that
the request does not pay for the graph; this worker then flips waiting rows to
``indexed = true`` a few hundred at a time, oldest first, each batch its own
short transaction that skips rows a writer holds, so several processes can share
the work and a writer never waits behind it. Growing the graph costs as much CPU
as it did inline, so while a load is still arriving (the newest waiting row
changed within the last ``quiet_s``, or this process is embedding or writing a
batch: ``busy``) the worker leaves the cores to it, unless the backlog already
spans ``backlog_max`` rows: that bounds what a search ranks
exactly beside the graph (see ``memories.repository.vector_search``). Rows of the
tenants this process holds in FAISS (``held``) do not count toward that bound and
wait for the quiet: their searches are answered from FAISS, and pgvector's graph is
only their fallback. Until a row is flipped it is found all the same, so the backlog
costs time, not results. The work yields to requests: between two batches it waits
for a moment without a request in flight (``foreground``, at most its pause), and the
runtime gives it a database session of its own whose server process runs at a lower
priority (``db.open_background_pool``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import MemoryServiceError
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.foreground import Foreground
from memory_service.infra.supervisor import Loop, Supervisor
from memory_service.memories import repository as repo

log = logging.getLogger(__name__)


class VectorIndexWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        batch_size: int,
        idle_interval_s: float,
        backlog_max: int,
        supervisor: Supervisor,
        quiet_s: float = 0.0,
        held: Callable[[], Collection[uuid.UUID]] = frozenset,
        busy: Callable[[], bool] = lambda: False,
        foreground: Foreground | None = None,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        self.batch_size = batch_size
        self.idle_interval_s = idle_interval_s
        self.backlog_max = backlog_max  # 0: index at once, even while a load arrives
        self.quiet_s = quiet_s  # a load has stopped once no row arrived for this long
        self.held = held  # tenants this process searches in FAISS
        self.busy = busy  # whether this process is embedding or writing a batch now
        self.foreground = foreground  # the requests in flight, which go first
        self.indexed = 0  # rows this worker put into the graph
        self.backlog = 0  # rows waiting at its last look, as a span of sequence numbers
        self._newest_seen: int | None = None
        self._arrived_at = 0.0
        self._loop: Loop | None = None

    def start(self) -> None:
        self._loop = self._supervisor.spawn("pgvector-index-worker", self._run)

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None

    def status(self) -> dict[str, int]:
        """For ``/metrics``: the backlog (an upper bound; 0 exactly when no row waits)."""
        return {"backlog": self.backlog, "indexed": self.indexed}

    async def index_batch(self, skip: Collection[uuid.UUID] = ()) -> int:
        """Flip one batch of waiting rows, none of the tenants in ``skip``; how many."""
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            flipped = await repo.index_backlog(conn, self.batch_size, list(skip))
        self.indexed += flipped
        return flipped

    async def drain(self) -> int:
        """Index every row waiting now; returns how many."""
        total = 0
        while flipped := await self.index_batch():
            total += flipped
        return total

    async def should_index(self) -> bool:
        """Whether there is a backlog and no load still adding to it (or it is too long)."""
        return await self.round() is not None

    async def round(self) -> list[uuid.UUID] | None:
        """None: nothing to index now. Otherwise the tenants to leave out this round:
        none once the load is quiet; while it arrives, those held in FAISS, whose rows
        never count toward ``backlog_max``."""
        async with wrap_db_errors(), self._pool.connection() as conn:
            span = await repo.backlog_span(conn)
        self.backlog = 0 if span is None else span[1] - span[0] + 1
        if span is None:
            return None
        newest, now = span[1], time.monotonic()
        if newest != self._newest_seen or self.busy():
            # a batch being embedded has not reached the table yet, and the graph's
            # growth would take the cores from the model
            self._newest_seen, self._arrived_at = newest, now
            arriving = True
        else:
            # a client between two batches (encoding the next one) is not a finished load
            arriving = now - self._arrived_at < self.quiet_s
        if not arriving or not self.backlog_max:
            return []
        skip = list(self.held())
        if skip:
            async with wrap_db_errors(), self._pool.connection() as conn:
                span = await repo.backlog_span(conn, skip)
        if span is None or span[1] - span[0] + 1 < self.backlog_max:
            return None
        return skip

    async def _run(self) -> None:
        while True:
            try:
                skip = await self.round()
                while skip is not None:
                    busy = await self.index_batch(skip) >= self.batch_size
                    await asyncio.sleep(0)  # other tasks of this process run between batches
                    if self.foreground is not None:
                        await self.foreground.quiet()
                    if not busy:
                        break
                    if self.backlog_max:
                        skip = await self.round()
            except MemoryServiceError as exc:
                log.warning("pgvector index worker skipped a round: %s", exc.detail)
            await asyncio.sleep(self.idle_interval_s)
