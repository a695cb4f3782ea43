"""Read replicas: which database a connection comes from, and read-your-writes tokens.

With standbys configured (``MEMORY_DATABASE_REPLICA_URLS``) the primary pool is a
``RoutedPool``. Code that may read stale data says so with ``standby_reads()``
(the HTTP layer does it for the routes that tolerate staleness); every
``pool.connection()`` inside that context comes from a healthy standby, and
everything else (writes, strong reads, ``primary_reads()``) from the primary.

A write answers a *consistency token*: the primary's WAL insert position after
it committed (``pg_current_wal_insert_lsn()``, as text such as ``0/3A1F2C8``). A
read that carries a token is served by a standby only once that standby has
replayed the position (``pg_last_wal_replay_lsn() >= token``), waiting up to
``replica_wait_ms``; otherwise the primary answers. So a client that wrote reads
its own writes, from whichever node.

Each standby has its own pool and circuit breaker. A monitor probes every standby
each ``replica_check_interval_s``: a standby that cannot be reached, or that
replays more than ``replica_max_lag_s`` behind the primary, has its breaker
tripped and gets no reads; the next successful probe closes it again. While the
primary cannot be reached no standby counts as behind: they are all there is. Without
standbys nothing here is built and the pool is the plain ``GuardedPool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memory_service.errors import FieldError, InvalidInput, MemoryServiceError
from memory_service.infra.resilience import CircuitBreaker, GuardedPool

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Consistency-Token"
SERVED_BY_HEADER = "X-Database-Node"
PRIMARY = "primary"
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_token(text: str) -> int:
    """A consistency token (a PostgreSQL LSN, ``X/Y`` in hex) as a number."""
    match = _LSN.match(text.strip())
    if match is None:
        raise InvalidInput(
            f"{TOKEN_HEADER} must be a token a write of this service returned (like 0/3A1F2C8)",
            errors=[FieldError(TOKEN_HEADER, "malformed")],
        )
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_token(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class ReadRoute:
    """How the reads of one unit of work may be served; ``served_by`` records where they
    were (mutable, so that work in child tasks reports back to the request)."""

    token: int | None = None
    served_by: list[str] = field(default_factory=list)


_route: ContextVar[ReadRoute | None] = ContextVar("memory_service_read_route", default=None)


@contextlib.contextmanager
def standby_reads(route: ReadRoute | None = None) -> Iterator[ReadRoute]:
    """Connections taken inside may come from a standby (reads that tolerate staleness)."""
    chosen = route or ReadRoute()
    reset = _route.set(chosen)
    try:
        yield chosen
    finally:
        _route.reset(reset)


@contextlib.contextmanager
def primary_reads() -> Iterator[None]:
    """Connections taken inside come from the primary, whatever the caller allowed."""
    reset = _route.set(None)
    try:
        yield
    finally:
        _route.reset(reset)


def split_urls(raw: str | None) -> list[str]:
    """Standby URLs from a comma-separated setting; a comma inside one URL (a libpq
    multi-host list) stays with it, since every URL starts with its scheme."""
    urls: list[str] = []
    for part in (raw or "").split(","):
        piece = part.strip()
        if not piece:
            continue
        if urls and not re.match(r"^postgres(ql)?://", piece):
            urls[-1] += "," + piece
        else:
            urls.append(piece)
    return urls


@dataclass
class Standby:
    name: str
    pool: AsyncConnectionPool
    breaker: CircuitBreaker  # tripped by the monitor or a failed read; closed by a good probe
    replayed: int = 0  # the last replay position seen
    lag_seconds: float = 0.0
    reachable: bool = False

    def usable(self) -> bool:
        return self.reachable and self.breaker.state == "closed"


class ReplicaSet:
    """The standbys, their health, and the choice of one for a read."""

    def __init__(
        self,
        standbys: list[Standby],
        *,
        max_lag_seconds: float,
        wait_seconds: float,
        check_interval_seconds: float,
    ) -> None:
        self.standbys = standbys
        self.max_lag_seconds = max_lag_seconds
        self.wait_seconds = wait_seconds
        self.check_interval_seconds = check_interval_seconds
        self.served: Counter[str] = Counter()  # reads by node name
        self.waited_out = 0  # token reads no standby could serve in time
        self._next = itertools.count()
        self._primary: RoutedPool | None = None
        # (when, primary WAL position) as the monitor saw them: a standby's lag is the age
        # of the oldest position it has not replayed yet
        self._positions: deque[tuple[float, int]] = deque(maxlen=4096)

    async def start(self, primary: RoutedPool) -> None:
        self._primary = primary
        for standby in self.standbys:
            await standby.pool.open(wait=False)  # a standby down at start-up is not fatal
        await self.check_all()

    async def close(self) -> None:
        for standby in self.standbys:
            await standby.pool.close()

    def breakers(self) -> list[CircuitBreaker]:
        return [s.breaker for s in self.standbys]

    # -- health ------------------------------------------------------------------------
    async def watch(self) -> None:
        """The standby monitor's loop: probe every ``check_interval_seconds``. Its owner
        runs it under the process's supervisor, which logs, counts and restarts it if a
        probe breaks in a way ``check_all`` does not expect."""
        while True:
            await asyncio.sleep(self.check_interval_seconds)
            await self.check_all()

    async def check_all(self) -> None:
        try:
            if self._primary is not None:
                async with self._primary.direct(timeout=1.0) as conn:
                    # flushed WAL: what a standby can have been sent
                    cur = await conn.execute("SELECT pg_current_wal_flush_lsn()::text")
                    row = await cur.fetchone()
                if row is not None:
                    self._positions.append((time.monotonic(), parse_token(row[0])))
        except (MemoryServiceError, psycopg.Error, PoolTimeout):
            # no primary to be behind: a standby holds all it will get from the lost one,
            # and a promoted one's positions continue from its own
            self._positions.clear()
        for standby in self.standbys:
            await self._check(standby)
        if self.standbys:
            oldest = min(s.replayed for s in self.standbys)
            while len(self._positions) > 1 and self._positions[0][1] <= oldest:
                self._positions.popleft()

    def _lag(self, replayed: int) -> float:
        for when, position in self._positions:
            if position > replayed:
                return time.monotonic() - when
        return 0.0

    async def _check(self, standby: Standby) -> None:
        """Probe one standby: its breaker trips when it is down or too far behind and
        closes again on the next good probe."""
        try:
            async with standby.pool.connection(timeout=1.0) as conn:
                cur = await conn.execute(
                    "SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()"
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            if standby.reachable:
                log.warning("standby %s is unreachable (%s); its reads go elsewhere", standby.name, exc)
            standby.reachable = False
            standby.breaker.trip()
            return
        assert row is not None
        replayed_text, in_recovery = row
        if in_recovery and replayed_text is not None:
            standby.replayed = max(standby.replayed, parse_token(replayed_text))
            standby.lag_seconds = self._lag(standby.replayed)
        else:  # promoted: it holds everything it will ever replay
            standby.lag_seconds = 0.0
        standby.reachable = True
        if standby.lag_seconds > self.max_lag_seconds:
            if standby.breaker.state == "closed":
                log.warning(
                    "standby %s replays %.1f s behind (bound %.1f s); its reads go elsewhere",
                    standby.name, standby.lag_seconds, self.max_lag_seconds,
                )
            standby.breaker.trip()
        elif standby.breaker.state != "closed":
            log.info("standby %s is back in step; it serves reads again", standby.name)
            standby.breaker.record_success(probe=True)

    # -- choosing ----------------------------------------------------------------------
    def _candidates(self) -> list[Standby]:
        usable = [s for s in self.standbys if s.usable()]
        if len(usable) > 1:  # round robin between equals
            shift = next(self._next) % len(usable)
            usable = usable[shift:] + usable[:shift]
        return usable

    @contextlib.asynccontextmanager
    async def standby_connection(self, route: ReadRoute) -> AsyncIterator[Any | None]:
        """A connection of a standby that has replayed ``route.token``, or None."""
        deadline = time.monotonic() + self.wait_seconds
        for standby in self._candidates():
            stack = contextlib.AsyncExitStack()
            try:
                conn = await stack.enter_async_context(standby.pool.connection(timeout=1.0))
                ready = route.token is None or await self._replayed(
                    standby, conn, route.token, deadline
                )
            except (psycopg.Error, PoolTimeout) as exc:
                await stack.aclose()
                standby.breaker.record_failure()
                log.info("standby %s could not serve a read (%s)", standby.name, exc)
                continue
            if not ready:
                await stack.aclose()
                break
            async with stack:
                route.served_by.append(standby.name)
                self.served[standby.name] += 1
                yield conn
            return
        if route.token is not None:
            self.waited_out += 1
        yield None

    async def _replayed(self, standby: Standby, conn: Any, token: int, deadline: float) -> bool:
        """Wait (polling this connection) until the standby has replayed ``token``."""
        pause = 0.002
        while standby.replayed < token:
            cur = await conn.execute("SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()")
            row = await cur.fetchone()
            if row is None or not row[1] or row[0] is None:
                return True  # promoted: it holds every write it was sent
            standby.replayed = max(standby.replayed, parse_token(row[0]))
            if standby.replayed >= token:
                break
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True

    def stats(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "state": s.breaker.state,
                "reachable": s.reachable,
                "lag_seconds": s.lag_seconds,
                "reads": self.served[s.name],
            }
            for s in self.standbys
        ]


class RoutedPool(GuardedPool):
    """The primary's pool; inside ``standby_reads()`` its connections come from a standby."""

    replicas: ReplicaSet

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        route = _route.get()
        if route is None:
            async with super().connection(timeout) as conn:
                yield conn
            return
        async with self.replicas.standby_connection(route) as standby:
            if standby is not None:
                yield standby
                return
        route.served_by.append(PRIMARY)
        self.replicas.served[PRIMARY] += 1
        async with super().connection(timeout) as conn:
            yield conn

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        await super().open(wait=wait, timeout=timeout)
        await self.replicas.start(self)

    async def close(self, timeout: float = 5.0) -> None:
        await self.replicas.close()
        await super().close(timeout)

    @contextlib.asynccontextmanager
    async def direct(self, timeout: float | None = None) -> AsyncIterator[Any]:
        async with super().connection(timeout) as conn:
            yield conn

    async def commit_token(self) -> str | None:
        """The primary's WAL position now: a read with it sees every write committed
        before. None (logged) when the primary cannot say: the write stands regardless."""
        try:
            async with self.direct() as conn:
                cur = await conn.execute("SELECT pg_current_wal_insert_lsn()::text")
                row = await cur.fetchone()
        except (MemoryServiceError, psycopg.Error, PoolTimeout) as exc:
            log.warning("no consistency token for a write: %s", exc)
            return None
        return str(row[0]) if row else None
