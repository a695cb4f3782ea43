"""Circuit breakers around the database and the embedder, so an outage fails fast.

``CircuitBreaker`` is the classic three-state machine. *Closed*: calls go
through and consecutive infrastructure failures are counted; at the threshold it
*opens*: every call fails at once with ``CircuitOpen`` (503 with Retry-After)
instead of queueing behind a dead dependency. After ``reset_seconds`` it turns
*half-open* and lets exactly one probe call through: success closes it, failure
opens it again. Only infrastructure failures count (a unique violation or a
404 proves the database is fine).

``GuardedPool`` is the connection pool with a breaker on ``connection()``;
``GuardedEmbedder`` wraps any embedder with a breaker, a span per batch and
timing metrics. Both are installed where the resources are built, so no caller
has to remember them.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import psycopg
from opentelemetry import trace
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memory_service.errors import CircuitOpen, Unavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()  # the embedder calls from worker threads
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.times_opened = 0
        self.rejected = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
                return HALF_OPEN
            return self._state

    def retry_after(self) -> int:
        with self._lock:
            remaining = self.reset_seconds - (self._clock() - self._opened_at)
        return max(1, math.ceil(remaining))

    def before_call(self) -> bool:
        """Admit a call or raise ``CircuitOpen``; True when the call is the half-open probe."""
        with self._lock:
            if self._state == CLOSED:
                return False
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            self.rejected += 1
            remaining = self.reset_seconds - (self._clock() - self._opened_at)
        raise CircuitOpen(
            f"the {self.name} is unavailable; failing fast while it recovers",
            retry_after=max(1, math.ceil(remaining)),
        )

    def record_success(self, probe: bool = False) -> None:
        with self._lock:
            if probe or self._state != OPEN:
                self._state = CLOSED
                self._failures = 0
            if probe:
                self._probe_in_flight = False

    def record_failure(self, probe: bool = False) -> None:
        with self._lock:
            if probe:
                self._probe_in_flight = False
            self._failures += 1
            if self._state == HALF_OPEN or (
                self._state == CLOSED and self._failures >= self.failure_threshold
            ):
                self._state = OPEN
                self._opened_at = self._clock()
                self.times_opened += 1

    def trip(self) -> None:
        """Open now, whatever the count: the caller knows the dependency is unfit (a
        standby too far behind); a later successful probe closes it again."""
        with self._lock:
            if self._state != OPEN:
                self._state = OPEN
                self.times_opened += 1
            self._opened_at = self._clock()
            self._failures = 0

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next call probe."""
        with self._lock:
            self._probe_in_flight = False

    @contextlib.contextmanager
    def guard(self, is_failure: Callable[[BaseException], bool]) -> Iterator[None]:
        probe = self.before_call()
        try:
            yield
        except Exception as exc:
            if is_failure(exc):
                self.record_failure(probe)
            else:
                self.record_success(probe)
            raise
        except BaseException:
            if probe:
                self.release_probe()
            raise
        else:
            self.record_success(probe)

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "times_opened": self.times_opened,
            "rejected": self.rejected,
        }


def is_database_failure(exc: BaseException) -> bool:
    """Errors that say the database (not the request) is the problem."""
    if isinstance(exc, CircuitOpen):
        return False
    return isinstance(
        exc,
        PoolTimeout
        | psycopg.OperationalError
        | pg_errors.AdminShutdown
        | pg_errors.CannotConnectNow
        | psycopg.InterfaceError
        | Unavailable,
    ) and not isinstance(exc, pg_errors.QueryCanceled)


class GuardedPool(AsyncConnectionPool):
    """``AsyncConnectionPool`` whose ``connection()`` goes through a circuit breaker."""

    def __init__(self, *args: Any, breaker: CircuitBreaker, **kwargs: Any) -> None:
        self.breaker = breaker
        super().__init__(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        with self.breaker.guard(is_database_failure):
            async with super().connection(timeout) as conn:
                yield conn


class GuardedEmbedder:
    """An embedder behind a breaker, with a span and timing for each batch."""

    def __init__(
        self,
        inner: Any,
        breaker: CircuitBreaker,
        *,
        tracer: Callable[[], trace.Tracer] | None = None,
        observe: Callable[[int, float, bool], None] | None = None,
    ) -> None:
        self.inner = inner
        self.breaker = breaker
        self._tracer = tracer or (lambda: trace.get_tracer("memory_service.embedding.embeddings"))
        self._observe = observe

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def model_name(self) -> str:
        return str(self.inner.model_name)

    def embed(self, texts: Sequence[str]) -> Any:
        started = time.perf_counter()
        failed = False
        # attributes describe the batch, never its text
        with self._tracer().start_as_current_span(
            "embedding.batch",
            attributes={"embedding.model": self.model_name, "embedding.batch_size": len(texts)},
        ):
            try:
                with self.breaker.guard(lambda exc: not isinstance(exc, CircuitOpen)):
                    return self.inner.embed(texts)
            except Unavailable:
                failed = True
                raise
            except Exception as exc:
                failed = True
                # the model is a dependency like the database: its failure is a 503
                raise Unavailable("the embedding model failed; retry later", retry_after=2) from exc
            finally:
                if self._observe is not None:
                    self._observe(len(texts), time.perf_counter() - started, failed)
