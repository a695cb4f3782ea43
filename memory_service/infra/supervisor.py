"""Supervision of the process's background work: no loop can die quietly.

Every long-running task the runtime starts (the event writer, the index
followers, the workflow driver, ...) runs through ``Supervisor.spawn``, which
names and watches it. An unexpected exception is logged once with its traceback
and the loop's name, counted per loop (``memory_background_failures_total`` in
``/metrics``), and the loop is started again after an exponential back-off
(``restart_initial_s``, doubling up to ``restart_max_s``; a loop that ran for
``restart_max_s`` before failing starts from the initial delay again). A loop
that failed ``failure_threshold`` times within ``failure_window_s`` is *failed*:
``/ready`` answers 503 naming it and the health score deducts for it, while the
supervisor goes on restarting it, so it recovers by itself once the cause is
gone. A loop that returns without being stopped counts as a failure too, since
every loop is meant to run until shutdown; stopping it (cancellation at
shutdown) is not a failure.

One-shot background jobs (loading a tenant into FAISS, building a scope graph,
running a built-in workflow step) run through ``Supervisor.run_job`` under a
group name: a failure is logged and counted the same way, but the job is not
repeated (what asked for it asks again) and a group never fails readiness.

The state it exposes names an exception's type, never its message: messages can
carry tenants' data, and the health score is readable by every tenant. The
message and the traceback are in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from memory_service.config import Settings
from memory_service.infra.health import HealthComponent

log = logging.getLogger(__name__)

LoopBody = Callable[[], Awaitable[None]]
State = Literal["running", "restarting", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    restart_initial_s: float = 0.5
    restart_max_s: float = 30.0
    failure_threshold: int = 5  # failures within the window that make a loop failed
    failure_window_s: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> SupervisionPolicy:
        return cls(
            restart_initial_s=settings.background_restart_initial_s,
            restart_max_s=settings.background_restart_max_s,
            failure_threshold=settings.background_failure_threshold,
            failure_window_s=settings.background_failure_window_s,
        )


@dataclass(frozen=True, slots=True)
class LoopState:
    """What ``/v1/health/score`` and ``/metrics`` show of one loop or job group."""

    name: str
    kind: Literal["loop", "jobs"]
    state: State
    restarts: int
    failures: int  # since start-up
    recent_failures: int  # within the failure window
    last_error: str | None  # the exception's type name


@dataclass(eq=False, slots=True)
class _Record:
    name: str
    kind: Literal["loop", "jobs"]
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    failures: int = 0
    failed_at: deque[float] = field(default_factory=deque)
    last_error: str | None = None
    backing_off: bool = False
    stopped: bool = False


class Loop:
    """The handle of one supervised loop; its owner stops it when it closes."""

    def __init__(self, supervisor: Supervisor, record: _Record) -> None:
        self._supervisor = supervisor
        self._record = record

    @property
    def name(self) -> str:
        return self._record.name

    async def stop(self) -> None:
        """Cancel the loop and wait for it; not counted as a failure."""
        record = self._record
        record.stopped = True
        task, record.task = record.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Supervisor:
    def __init__(
        self,
        policy: SupervisionPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or SupervisionPolicy()
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._jobs: set[asyncio.Task[None]] = set()

    # -- starting ----------------------------------------------------------------------
    def spawn(self, name: str, body: LoopBody) -> Loop:
        """Run ``body`` as the loop ``name`` until stopped, restarting it when it fails."""
        existing = self._records.get(name)
        if existing is not None and not existing.stopped:
            raise ValueError(f"a background loop named {name!r} is already running")
        record = _Record(name, "loop")
        self._records[name] = record
        record.task = asyncio.create_task(self._supervise(record, body), name=name)
        return Loop(self, record)

    def run_job(self, group: str, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run one background job; a failure is logged and counted under ``group``."""
        record = self._records.get(group)
        if record is None:
            record = self._records[group] = _Record(group, "jobs")
        task = asyncio.create_task(self._job(record, job), name=group)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def close(self) -> None:
        """Stop whatever is still running (each owner normally stops its own first)."""
        for record in list(self._records.values()):
            if record.kind == "loop":
                await Loop(self, record).stop()
        for task in list(self._jobs):
            task.cancel()
        for task in list(self._jobs):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- reading -----------------------------------------------------------------------
    def states(self) -> list[LoopState]:
        return [self._state(r) for r in sorted(self._records.values(), key=lambda r: r.name)]

    def failing(self) -> list[LoopState]:
        """The loops that keep failing: readiness fails while there are any."""
        return [s for s in self.states() if s.kind == "loop" and s.state == "failed"]

    def readiness(self) -> str:
        """``/ready``'s check: "ok", or the loops that keep failing and how."""
        failing = self.failing()
        if not failing:
            return "ok"
        return "failing: " + ", ".join(f"{s.name} ({s.last_error})" for s in failing)

    def metric_families(self) -> Iterator[Any]:
        """For ``/metrics``: failures and restarts per loop, and which ones are failed."""
        failures = CounterMetricFamily(
            "memory_background_failures",
            "Unexpected failures of a background loop or job group",
            labels=["loop"],
        )
        restarts = CounterMetricFamily(
            "memory_background_restarts", "Restarts of a background loop", labels=["loop"]
        )
        failed = GaugeMetricFamily(
            "memory_background_loop_failed",
            "1 while a background loop keeps failing (and /ready answers 503)",
            labels=["loop"],
        )
        for s in self.states():
            failures.add_metric([s.name], s.failures)
            if s.kind == "loop":
                restarts.add_metric([s.name], s.restarts)
                failed.add_metric([s.name], 1 if s.state == "failed" else 0)
        yield failures
        yield restarts
        yield failed

    def health_components(self) -> list[HealthComponent]:
        """Deductions of the health score: one per loop or job group that failed within
        the window (the whole window's worth for a failed loop), else one saying all is well."""
        window = f"{self.policy.failure_window_s:g}s"
        out: list[HealthComponent] = []
        states = self.states()
        for s in states:
            if s.state == "failed":
                why = f"{s.recent_failures} failures in the last {window}, last {s.last_error}"
                reason = f"background loop {s.name} keeps failing ({why}); /ready reports it"
                out.append(HealthComponent(f"background.{s.name}", 25.0, "failing", reason))
            elif s.recent_failures:
                points = min(20.0, 5.0 * s.recent_failures) if s.kind == "loop" else 5.0
                what = "background loop" if s.kind == "loop" else "background jobs of"
                reason = (
                    f"{what} {s.name} failed {s.recent_failures} time(s) in the last {window} "
                    f"(last {s.last_error}); "
                    + ("restarting" if s.state == "restarting" else f"now {s.state}")
                )
                out.append(HealthComponent(f"background.{s.name}", points, "degraded", reason))
        if not out:
            loops = sum(1 for s in states if s.kind == "loop" and s.state == "running")
            reason = f"{loops} background loops running, none failed in the last {window}"
            out.append(HealthComponent("background", 0.0, "ok", reason))
        return out

    def _state(self, record: _Record) -> LoopState:
        recent = self._recent(record)
        state: State
        if record.stopped:
            state = "stopped"
        elif record.kind == "loop" and recent >= self.policy.failure_threshold:
            state = "failed"
        elif record.backing_off:
            state = "restarting"
        else:
            state = "running"
        return LoopState(
            record.name,
            record.kind,
            state,
            record.restarts,
            record.failures,
            recent,
            record.last_error,
        )

    def _recent(self, record: _Record) -> int:
        horizon = self._clock() - self.policy.failure_window_s
        while record.failed_at and record.failed_at[0] < horizon:
            record.failed_at.popleft()
        return len(record.failed_at)

    # -- watching ----------------------------------------------------------------------
    async def _supervise(self, record: _Record, body: LoopBody) -> None:
        policy = self.policy
        consecutive = 0
        while True:
            started = self._clock()
            try:
                await body()
                error: BaseException = RuntimeError("the loop returned without being stopped")
            except asyncio.CancelledError as exc:
                if _cancel_requested():
                    raise
                error = exc  # raised from inside the loop, not a shutdown
            except Exception as exc:
                error = exc
            if self._clock() - started >= policy.restart_max_s:
                consecutive = 0
            delay = min(policy.restart_initial_s * 2**consecutive, policy.restart_max_s)
            consecutive += 1
            self._failed(record, error, f"restarting in {delay:.2f}s")
            record.backing_off = True
            try:
                await asyncio.sleep(delay)
            finally:
                record.backing_off = False
            record.restarts += 1

    async def _job(self, record: _Record, job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        except asyncio.CancelledError as exc:
            if _cancel_requested():
                raise
            self._failed(record, exc, "not repeated")
        except Exception as exc:
            self._failed(record, exc, "not repeated")

    def _failed(self, record: _Record, error: BaseException, then: str) -> None:
        record.failures += 1
        record.last_error = type(error).__name__
        record.failed_at.append(self._clock())
        recent = self._recent(record)
        what = "background loop" if record.kind == "loop" else "background job of"
        log.error(
            "%s %s failed (%s); %s",
            what,
            record.name,
            record.last_error,
            then,
            exc_info=error,
        )
        if record.kind == "loop" and recent == self.policy.failure_threshold:
            log.error(
                "background loop %s failed %d times within %.0fs: /ready reports it until "
                "it stays up",
                record.name,
                recent,
                self.policy.failure_window_s,
            )


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# -- shutdown ------------------------------------------------------------------------
Closer = Callable[[], Awaitable[None]]

CLOSE_TIMEOUT_S = 30.0
"""How long shutdown waits for one component before it goes on without it."""


async def close_all(closers: list[Closer]) -> None:
    """Close in reverse order of start; a component that hangs is logged and left
    behind (not awaited again, since cancelling a call in a worker thread waits for
    the thread), so shutdown always ends."""
    for closer in reversed(closers):
        task = asyncio.ensure_future(closer())
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            task.cancel()
            log.error(
                "%s did not close within %.0f s; shutting down without it",
                getattr(closer, "__qualname__", repr(closer)),
                CLOSE_TIMEOUT_S,
            )
            continue
        try:
            task.result()
        except Exception:
            log.exception("error while closing a component")
    closers.clear()
