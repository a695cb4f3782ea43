"""Requests first: the count of requests in flight, and low-priority background threads.

A process's background work (FAISS graphs grown or compacted after a bulk load, the
graphs of large scopes, pgvector's catch-up in the database) needs the same cores as
the requests it serves, and a request that waits for a core waits however fast its
own work is. Three things keep that work behind the requests:

- ``Foreground`` counts the requests in flight (the HTTP layer enters and leaves it
  around each request; event streams, which mostly sleep, stay out). Background work
  calls ``pause`` (in a thread) or ``quiet`` (on the event loop) between two chunks of
  work: both return as soon as no request is in flight, and after ``max_pause_s`` at
  the latest, so a steady stream of requests slows background work down but never
  stops it.
- ``BackgroundThreads`` is a small pool whose threads lower their own scheduling
  priority when they start (``nice``; on Linux it is a property of each thread), so the
  kernel gives them only the cores that request threads leave idle. A chunk of work
  calls ``step``: it stops the job when the pool closes, and pauses for the foreground.
- ``lower_priority`` does the same for another process of this machine, such as the
  PostgreSQL server process that serves the session of background work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_S = 0.005  # how often ``quiet`` looks again while requests are in flight


class Foreground:
    """The requests this process is serving now (``enter``/``leave`` on the event loop)."""

    def __init__(self, max_pause_s: float = 0.05) -> None:
        self.max_pause_s = max_pause_s
        self._in_flight = 0
        self._idle = threading.Condition()
        self.pauses = 0  # chunks of background work that waited for the requests
        self.paused_s = 0.0  # and how long, all together

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()

    def pause(self) -> float:
        """In a background thread: wait until no request is in flight, at most
        ``max_pause_s``; returns the seconds it waited."""
        if not self._in_flight:
            return 0.0
        started = time.monotonic()
        deadline = started + self.max_pause_s
        with self._idle:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
        return self._count(started)

    async def quiet(self) -> float:
        """``pause`` for a coroutine on the event loop (which serves the requests, so it
        looks again every few milliseconds rather than block)."""
        if not self._in_flight:
            return 0.0
        started = time.monotonic()
        deadline = started + self.max_pause_s
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return self._count(started)

    def _count(self, started: float) -> float:
        waited = time.monotonic() - started
        self.pauses += 1
        self.paused_s += waited
        return waited


class BackgroundClosed(Exception):
    """A background job stopped between two chunks because its pool is closing."""


class BackgroundThreads:
    """Background jobs on ``workers`` threads of scheduling priority ``nice`` (0: as the
    requests'), each running ``setup`` once when it starts."""

    def __init__(
        self,
        foreground: Foreground,
        *,
        workers: int = 1,
        nice: int = 10,
        setup: Callable[[], None] | None = None,
        name: str = "background",
    ) -> None:
        self.foreground = foreground
        self.nice = nice
        self._setup = setup
        self._closing = threading.Event()
        self._executor = ThreadPoolExecutor(workers, name, initializer=self._start_thread)
        self.native_ids: set[int] = set()  # the pool's threads, as the kernel knows them
        self.steps = 0  # chunks of work done
        self.backlog = 0  # rows that jobs queued or running put into indexes

    def _start_thread(self) -> None:
        self.native_ids.add(threading.get_native_id())
        if self.nice:
            lower_priority(threading.get_native_id(), self.nice)
        if self._setup is not None:
            self._setup()

    async def run(self, job: Callable[..., T], *args: Any, rows: int = 0) -> T:
        """Run ``job(*args)`` on one of these threads; ``rows``: how many it puts into an
        index, counted in ``backlog`` until it ends. Cancelling the caller does not stop
        a job that has started; closing the pool stops it at its next ``step``."""
        if self._closing.is_set():
            raise BackgroundClosed("the background threads are closed")
        with self.counted(rows):
            return await asyncio.wrap_future(self._executor.submit(job, *args))

    @contextlib.contextmanager
    def counted(self, rows: int) -> Iterator[None]:
        """Count ``rows`` of index work in ``backlog`` while the block runs (on the event
        loop; also for such work that runs elsewhere)."""
        self.backlog += rows
        try:
            yield
        finally:
            self.backlog -= rows

    def step(self) -> None:
        """Between two chunks of a job (in one of these threads): stop if closing, and
        give the requests in flight their moment first."""
        if self._closing.is_set():
            raise BackgroundClosed("the background threads are closing")
        self.steps += 1
        self.foreground.pause()

    def close(self) -> None:
        self._closing.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def lower_priority(native_id: int, nice: int) -> bool:
    """Lower a thread's or an owned process's scheduling priority to ``nice`` (Linux
    only: elsewhere a thread id is no process id). A failure is logged, never raised:
    the work is then merely not deferred."""
    if sys.platform != "linux" or nice <= 0:
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, native_id) < nice:
            os.setpriority(os.PRIO_PROCESS, native_id, nice)
        return True
    except OSError as exc:
        log.warning("could not lower the priority of %d to nice %d: %s", native_id, nice, exc)
        return False


def is_postgres(pid: int) -> bool:
    """Whether ``pid`` is a PostgreSQL server process on this machine."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False
