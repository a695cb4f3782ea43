"""The background driver: runs built-in steps, fires durable timers, expires leases.

Every service process runs one, and any number may run against one database:
built-in steps are claimed like any worker's (``FOR UPDATE SKIP LOCKED``, with a
lease, so a process that dies mid-step loses only its lease), and timers and
expired leases are settled one step per transaction under the run's lock, after
re-checking that they are still due, so two drivers never settle one twice.
It also appends to runs' executions the completed steps that a crash kept from
them (``RunTimeline.catch_up``). The driver sleeps until the next due time it knows of, a ``NOTIFY`` that
something changed, or ``poll_interval_s``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime

from memory_service.errors import InvalidInput, MemoryServiceError, Unavailable
from memory_service.events.fanout import EventFanout
from memory_service.infra.supervisor import Loop, Supervisor
from memory_service.workflows import repository as repo
from memory_service.workflows.builtins import BUILTINS, MemorySteps
from memory_service.workflows.definitions import BUILTIN_QUEUE
from memory_service.workflows.models import Attempt
from memory_service.workflows.transition import DRIVER
from memory_service.workflows.workers import WorkerGateway

log = logging.getLogger(__name__)
DUE_BATCH = 100


class WorkflowDriver:
    def __init__(
        self,
        gateway: WorkerGateway,
        wakeups: EventFanout,
        steps: MemorySteps,
        *,
        supervisor: Supervisor,
        concurrency: int = 4,
        poll_interval_s: float = 1.0,
        lease_s: float = 120.0,
    ) -> None:
        self.gateway = gateway
        self._supervisor = supervisor
        self.wakeups = wakeups
        self.steps = steps
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self.worker_id = f"driver:{socket.gethostname()}:{os.getpid()}"
        self._loop: Loop | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._subscription = wakeups.subscribe(DRIVER)

    def start(self) -> None:
        self._loop = self._supervisor.spawn("workflow-driver", self._drive)

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
        for task in self._running:
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._subscription.close()

    async def _drive(self) -> None:
        while True:
            self._subscription.clear()
            delay = self.poll_interval_s
            try:
                await self._settle_due()
                await self._claim_builtins()
                if self.gateway.service.timeline is not None:
                    await self.gateway.service.timeline.catch_up()
                delay = await self._next_delay()
            except Unavailable as exc:
                log.warning("workflow driver waits for the database: %s", exc.detail)
            except MemoryServiceError as exc:  # a refusal the next pass looks at again
                log.error("workflow driver pass failed: %s", exc.detail)
            # anything else is a bug: the supervisor logs, counts and restarts the loop
            await self._subscription.wait(delay)

    async def _settle_due(self) -> None:
        while True:
            async with self.gateway.service.transition() as tx:
                due = await repo.due(tx.conn, DUE_BATCH)
            for run_id, step_row, why in due:
                await self.gateway.expire_or_fire(run_id, step_row, why)
            if len(due) < DUE_BATCH:
                return

    async def _claim_builtins(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0:
            return
        claimed = await self.gateway.claim(
            None, self.worker_id, [BUILTIN_QUEUE], max_steps=free, lease_s=self.lease_s
        )
        for attempt in claimed:
            task = self._supervisor.run_job("workflow-builtin-steps", self._run_builtin(attempt))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._subscription.wake()  # a slot is free: look for more

    async def _next_delay(self) -> float:
        async with self.gateway.service.transition() as tx:
            upcoming = await repo.next_wakeup(tx.conn)
        if upcoming is None:
            return self.poll_interval_s
        ahead = (upcoming - datetime.now(UTC)).total_seconds()
        return min(max(ahead, 0.01), self.poll_interval_s)

    async def _run_builtin(self, attempt: Attempt) -> None:
        run = BUILTINS[attempt.kind]
        try:
            output = await run(self.steps, attempt.tenant_id, attempt.input)
            # what completing would refuse (a value stored before the rules, say) fails the
            # step now, rather than leaving it to be delivered and refused again and again
            self.gateway.service.check_json(output, "output")
        except InvalidInput as exc:
            await self._settle(attempt, None, exc.detail, retryable=False)
        except MemoryServiceError as exc:
            await self._settle(attempt, None, exc.detail, retryable=True)
        except Exception as exc:
            log.exception("built-in step %s failed", attempt.kind)
            await self._settle(attempt, None, type(exc).__name__, retryable=True)
        else:
            await self._settle(attempt, output, None, retryable=False)

    async def _settle(
        self, attempt: Attempt, output: object, error: str | None, *, retryable: bool
    ) -> None:
        try:
            if error is None:
                await self.gateway.complete(None, attempt.id, attempt.lease_token, output)
            else:
                await self.gateway.fail(None, attempt.id, attempt.lease_token, error, retryable)
        except MemoryServiceError as exc:  # cancelled meanwhile, or the lease ran out
            log.info("built-in step %s not settled: %s", attempt.step_id, exc.detail)
