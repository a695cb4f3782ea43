"""Follows the ``memory_changes`` log so that every process's indexes track the database.

A dedicated connection LISTENs on the ``memory_changes`` channel and wakes the
follower on each commit; a poll every ``faiss_poll_interval_s`` is the safety net
for lost notifications or a broken listening connection. Log sequence numbers
are assigned at insert but become visible at commit, so a lower number can
appear after a higher one: the follower applies whatever it sees (applying is
idempotent) and advances its *mark* only across a contiguous run, waiting up to
``GAP_TIMEOUT_S`` for a missing number before deciding it was rolled back.
Every change up to the mark is in the indexes; snapshots record it. A purge's
row has the process wipe the memories from its indexes and snapshots
(``search.erasure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict

import psycopg
from psycopg_pool import AsyncConnectionPool

from memory_service.errors import MemoryServiceError
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop, Supervisor
from memory_service.search import erasure, store
from memory_service.search.indexes import TenantIndexes

log = logging.getLogger(__name__)

GAP_TIMEOUT_S = 30.0  # longer than any write transaction of the service
BATCH = 5000


class ChangeFollower:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        database_url: str,
        indexes: TenantIndexes,
        *,
        poll_interval_s: float,
        supervisor: Supervisor,
    ) -> None:
        self.pool = pool
        self._supervisor = supervisor
        self.database_url = database_url
        self.indexes = indexes
        self.poll_interval_s = poll_interval_s
        self.mark = 0
        self._seen_above: set[int] = set()
        self._gaps: dict[int, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loops: list[Loop] = []
        self.listening = False
        self.caught_up_at = time.monotonic()

    async def start(self) -> None:
        """Begin at the last change old enough to have no rolled-back gaps before it."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            self.mark = await store.settled_mark(conn, GAP_TIMEOUT_S)
        self._loops = [
            self._supervisor.spawn("memory-changes-listen", self._listen),
            self._supervisor.spawn("memory-changes-poll", self._poll),
        ]

    async def stop(self) -> None:
        for loop in self._loops:
            await loop.stop()
        self._loops = []

    def lag_seconds(self) -> float:
        """How long ago the indexes last matched the whole visible log."""
        return time.monotonic() - self.caught_up_at

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {store.CHANNEL}")
                    self.listening = True
                    backoff = 0.5
                    self._wake.set()  # catch up on what happened while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("change notifications interrupted (%s); polling meanwhile", exc)
            finally:
                self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
            self._wake.clear()
            try:
                await self.catch_up()
            except MemoryServiceError as exc:
                log.warning("could not read the change log: %s", exc)

    async def catch_up(self) -> int:
        """Apply every visible change past the mark; returns how many were applied."""
        async with self._lock:
            applied = 0
            while True:
                async with wrap_db_errors(), self.pool.connection() as conn:
                    changes = await store.changes_after(conn, self.mark, BATCH)
                fresh = [c for c in changes if c.seq not in self._seen_above]
                if fresh:
                    await self._apply(fresh)
                    applied += len(fresh)
                self._advance([c.seq for c in changes])
                if len(changes) < BATCH or not fresh:
                    self.caught_up_at = time.monotonic()
                    return applied

    async def _apply(self, changes: list[store.Change]) -> None:
        by_tenant: dict[uuid.UUID, set[int]] = defaultdict(set)
        purged: dict[uuid.UUID, set[int]] = defaultdict(set)
        for change in changes:
            by_tenant[change.tenant_id].add(change.memory_seq)
            if change.op == "purge":
                purged[change.tenant_id].add(change.memory_seq)
        for tenant_id, seqs in by_tenant.items():
            t = self.indexes.get(tenant_id)
            if t is not None:
                await self.indexes.refresh(t, seqs)
        for tenant_id, seqs in purged.items():  # held or not: its snapshots may hold them
            await erasure.erase(self.indexes, tenant_id, seqs)

    def _advance(self, seen: list[int]) -> None:
        now = time.monotonic()
        if seen:
            self._seen_above.update(seen)
            for seq in seen:
                self._gaps.pop(seq, None)
            for seq in range(self.mark + 1, max(seen)):
                if seq not in self._seen_above and seq not in self._gaps:
                    self._gaps[seq] = now
        while True:
            nxt = self.mark + 1
            if nxt in self._seen_above:
                self._seen_above.discard(nxt)
            elif nxt in self._gaps and now - self._gaps[nxt] > GAP_TIMEOUT_S:
                del self._gaps[nxt]
            else:
                break
            self.mark = nxt
