"""Where a request's time goes: seconds per stage, gathered while it runs.

The HTTP layer opens a ``StageClock`` for each request (``start``); code on the
request's path adds to it with ``timed(stage)``, wherever it runs: the clock lives
in a context variable, which tasks and worker threads started by the request
inherit. Nothing is timed outside a request (background loops, the CLI), and a
stage entered again inside itself is counted once. The database stage is timed by
``TimedCursor``, the pool's cursor class, so every statement counts without each
query saying so. ``ServiceMetrics`` turns a finished clock into histograms.

The stages: ``parse`` (reading and decoding the body), ``auth`` (the API key),
``admission`` (rate and slot limits), ``database`` (statements, from send to the
first result), ``index`` (vector index searches), ``serialise`` (encoding the
response until its first byte is sent), and ``other``: the rest (routing,
validation, the service's own work).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Any, Self

from psycopg import AsyncCursor

STAGES = ("parse", "auth", "admission", "database", "index", "serialise", "other")


class StageClock:
    """Seconds per stage of one request."""

    __slots__ = ("_active", "_handled", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._active: set[str] = set()
        self._handled: float | None = None

    def handled(self) -> None:
        """The handler has returned: encoding the response starts."""
        self._handled = time.perf_counter()

    def response_started(self) -> None:
        """The first byte of the response is going out: encoding it is over."""
        if self._handled is not None:
            self.add("serialise", time.perf_counter() - self._handled)
            self._handled = None

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def breakdown(self, total: float) -> dict[str, float]:
        """Every stage timed, plus ``other``: what is left of ``total``."""
        found = dict(self.seconds)
        found["other"] = max(0.0, total - sum(found.values()))
        return found


_clock: contextvars.ContextVar[StageClock | None] = contextvars.ContextVar(
    "stage_clock", default=None
)


def start() -> tuple[StageClock, contextvars.Token[StageClock | None]]:
    clock = StageClock()
    return clock, _clock.set(clock)


def stop(token: contextvars.Token[StageClock | None]) -> None:
    _clock.reset(token)


def current() -> StageClock | None:
    return _clock.get()


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Adds the time spent inside to ``stage`` of the current request, if any."""
    clock = _clock.get()
    if clock is None or stage in clock._active:
        yield
        return
    clock._active.add(stage)
    started = time.perf_counter()
    try:
        yield
    finally:
        clock._active.discard(stage)
        clock.add(stage, time.perf_counter() - started)


class TimedCursor(AsyncCursor[Any]):
    """The pool's cursor: each statement's time counts as the ``database`` stage."""

    async def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        with timed("database"):
            return await super().execute(query, params, prepare=prepare, binary=binary)
