"""Fair sharing between tenants: a rate, a share of the requests in flight, and slots.

``TenantLimiter`` admits every ``/v1`` request before its body is read. It keeps,
per *party* (a tenant's id, or a client address as a string for requests without a
valid key), a token bucket (``rate`` requests per second, ``burst`` at once) and a
count of requests in flight. A party at its in-flight share waits in a short queue
of its own (at most ``queue_wait_s``, at most ``4 x share`` waiting) for one of its
own requests to end, then is refused: so one party's flood never holds more than its
share of the event loop, the database pool and the search and embedding threads,
and everyone else's requests pass it by. Waiting requests are woken in arrival
order, each handed the slot its predecessor gave back.

Long-lived requests hold *slots* of a kind instead (``"stream"`` for event streams,
``"long_poll"`` for requests that wait for something to happen): ``hold`` takes
one, and the request gives its in-flight place back, as it mostly sleeps.

A party over any limit gets ``RateLimited`` with the seconds to wait, never sooner
than ``queue_wait_s`` after it asked: a client that ignores ``Retry-After`` and asks
again at once can then send one request per connection and wait, and a refusal costs
a timer. Everything is in process memory and never touches the database; with several
replicas each enforces its own share.

``FairThread`` is the other half: one worker thread (the query embeddings') that takes
its jobs round-robin by tenant, so a tenant's queue never stands before another's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from memory_service.errors import RateLimited

SLOT_KINDS = ("stream", "long_poll")
WAITERS_PER_SLOT = 4  # a party queues at most this many requests per in-flight place
MAX_PARTIES = 100_000  # rate buckets kept; past it every party starts from a full one again

Party = uuid.UUID | str  # a tenant, or "address <ip>" for requests without a valid key
Release = Callable[[], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Share:
    """What one party may use: ``rate`` requests/s (0: no limit) in bursts of ``burst``,
    ``in_flight`` requests at once (0: no limit)."""

    rate: float
    burst: int
    in_flight: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class _Queue:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class TenantLimiter:
    """Token buckets, in-flight queues and slot counters per party (a plain class: it
    holds a lock; ``enter`` runs on the event loop)."""

    def __init__(
        self,
        *,
        rate: float,  # requests per second and tenant; 0 switches the rate limit off
        burst: int,
        slots: Mapping[str, int],  # kind -> concurrent slots per tenant (0: unlimited)
        in_flight: int = 0,  # requests at once per tenant (0: unlimited)
        queue_wait_s: float = 0.0,  # how long a request over the share may wait
        anonymous: Share | None = None,  # per client address, for requests without a valid key
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.slots = dict(slots)
        self.tenant_share = Share(rate, burst, in_flight)
        self.anonymous_share = anonymous or Share(0.0, 1, 0)
        self.queue_wait_s = queue_wait_s
        self.clock = clock
        self.refused: dict[str, int] = {"rate": 0, "in_flight": 0, "slot": 0}
        self._buckets: dict[Party, _Bucket] = {}
        self._queues: dict[Party, _Queue] = {}
        self._held: dict[tuple[uuid.UUID, str], int] = {}
        self._lock = threading.Lock()

    def share(self, party: Party) -> Share:
        return self.tenant_share if isinstance(party, uuid.UUID) else self.anonymous_share

    # -- rate ------------------------------------------------------------------------------
    def admit(self, party: Party) -> None:
        """Take one request token for ``party`` or raise ``RateLimited``."""
        share = self.share(party)
        if share.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(party)
            if bucket is None:
                if len(self._buckets) >= MAX_PARTIES:
                    self._buckets.clear()  # a full bucket is what a new party gets anyway
                bucket = self._buckets[party] = _Bucket(float(share.burst), now)
            bucket.tokens = min(float(share.burst), bucket.tokens + (now - bucket.stamp) * share.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / share.rate
            self.refused["rate"] += 1
        who = "tenant" if isinstance(party, uuid.UUID) else "client address without a valid key"
        raise RateLimited(
            f"more than {share.rate:g} requests per second for this {who}",
            retry_after=max(1, math.ceil(wait)),
        )

    # -- in flight -------------------------------------------------------------------------
    async def enter(self, party: Party, *, rated: bool = True) -> Release:
        """Admit one request of ``party``: a rate token (unless not ``rated``), then a place
        among its requests in flight, waiting at most ``queue_wait_s`` for one. Returns the
        function that gives the place back (calling it twice gives it back once); raises
        ``RateLimited``, never sooner than ``queue_wait_s`` after the call: a client that
        retries at once without reading ``Retry-After`` then sends at most one request per
        connection and wait, so a flood of refusals cannot take the event loop (a sleeping
        refusal costs a timer)."""
        started = time.monotonic()
        try:
            return await self._enter(party, rated)
        except RateLimited:
            await asyncio.sleep(self.queue_wait_s - (time.monotonic() - started))
            raise

    async def _enter(self, party: Party, rated: bool) -> Release:
        if rated:
            self.admit(party)
        limit = self.share(party).in_flight
        if not limit:
            return _noop
        queue = self._queues.get(party)
        if queue is None:
            queue = self._queues[party] = _Queue()
        if queue.running < limit:
            queue.running += 1
            return self._releaser(party, queue)
        if self.queue_wait_s <= 0 or len(queue.waiting) >= WAITERS_PER_SLOT * limit:
            self._refuse_in_flight(party, limit)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.waiting.append(turn)
        try:
            await asyncio.wait((turn,), timeout=self.queue_wait_s)
        except asyncio.CancelledError:
            self._leave(party, queue, turn)
            raise
        if turn.done():  # handed the place of a request that ended
            return self._releaser(party, queue)
        self._leave(party, queue, turn)
        self._refuse_in_flight(party, limit)
        raise AssertionError("unreachable")  # pragma: no cover

    def in_flight(self, party: Party) -> int:
        queue = self._queues.get(party)
        return queue.running if queue else 0

    def _refuse_in_flight(self, party: Party, limit: int) -> None:
        self.refused["in_flight"] += 1
        who = "this tenant" if isinstance(party, uuid.UUID) else "this client address"
        raise RateLimited(
            f"{who} already has {limit} requests in flight, its share; retry when one has ended",
            retry_after=1,
        )

    def _leave(self, party: Party, queue: _Queue, turn: asyncio.Future[None]) -> None:
        if turn.done() and not turn.cancelled():
            self._give_back(party, queue)  # handed a place just as it stopped waiting
            return
        turn.cancel()
        if turn in queue.waiting:
            queue.waiting.remove(turn)

    def _releaser(self, party: Party, queue: _Queue) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._give_back(party, queue)

        return release

    def _give_back(self, party: Party, queue: _Queue) -> None:
        while queue.waiting:
            turn = queue.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes to the oldest waiting request
                return
        queue.running -= 1
        if queue.running <= 0 and self._queues.get(party) is queue:
            del self._queues[party]

    # -- slots -----------------------------------------------------------------------------
    def hold(self, tenant_id: uuid.UUID, kind: str) -> Release:
        """Take a ``kind`` slot for the tenant; returns the function that gives it back."""
        limit = self.slots.get(kind, 0)
        key = (tenant_id, kind)
        with self._lock:
            held = self._held.get(key, 0)
            if limit and held >= limit:
                self.refused["slot"] += 1
                raise RateLimited(
                    f"this tenant already holds {held} open {kind.replace('_', ' ')} requests, "
                    f"its limit; close one first",
                    retry_after=1,
                )
            self._held[key] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            with self._lock:
                left = self._held.get(key, 1) - 1
                if left:
                    self._held[key] = left
                else:
                    self._held.pop(key, None)

        return release

    def held(self, tenant_id: uuid.UUID, kind: str) -> int:
        with self._lock:
            return self._held.get((tenant_id, kind), 0)


def _noop() -> None:
    return None


class FairThread:
    """One worker thread that takes its jobs round-robin by owner, not in arrival order.

    A party with many jobs queued (a flood of searches, each one query embedding) then
    delays another party's job by at most the job that is running and one more of its
    own, not by its whole queue. Jobs without an owner share one turn of their own.
    """

    def __init__(self, name: str) -> None:
        self._queues: dict[Hashable, deque[_Job]] = {}
        self._turns: deque[Hashable] = deque()  # owners with jobs, in turn order
        self._ready = threading.Condition()
        self._closed = False
        self._name = name
        self._thread: threading.Thread | None = None  # started by the first job

    async def run(self, owner: Hashable, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the thread is closed")
            queue = self._queues.get(owner)
            if queue is None:
                queue = self._queues[owner] = deque()
                self._turns.append(owner)
            queue.append(_Job(fn, loop, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify()
        return await done

    def close(self) -> None:
        with self._ready:
            self._closed = True
            for queue in self._queues.values():
                for job in queue:
                    job.loop.call_soon_threadsafe(job.done.cancel)
            self._queues.clear()
            self._turns.clear()
            self._ready.notify()

    def _next(self) -> _Job | None:
        with self._ready:
            while not self._turns and not self._closed:
                self._ready.wait()
            if not self._turns:
                return None
            owner = self._turns.popleft()
            queue = self._queues[owner]
            job = queue.popleft()
            if queue:
                self._turns.append(owner)  # back of the line for its next job
            else:
                del self._queues[owner]
            return job

    def _run(self) -> None:
        while (job := self._next()) is not None:
            if job.done.cancelled():
                continue
            result, error = None, None
            try:
                result = job.fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with contextlib.suppress(RuntimeError):  # its event loop has closed meanwhile
                job.loop.call_soon_threadsafe(_settle, job.done, result, error)


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[Any]


def _settle(done: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if done.cancelled():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)
