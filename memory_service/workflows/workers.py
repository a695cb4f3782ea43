"""What workers do over HTTP: claim step attempts (long poll), heartbeat, complete, fail.

A claim is one ``FOR UPDATE SKIP LOCKED`` statement that turns ready steps into
running attempts, each with a fresh lease token; concurrent claimers in any
number of processes never get the same step. With nothing ready, a claim waits:
a commit that makes steps ready wakes as many of that queue's waiting claims as
it made ready (``memory_service.workflows.transition``), and a poll every
``poll_interval_s`` is the safety net for lost notifications and for backoffs
that come due. Completing or failing checks the token under the step's row
lock: a stale, repeated or late call is a ``Conflict`` and changes nothing, so
each step's output is recorded exactly once although delivery is at least once.
Completions that arrive together share one transaction
(``memory_service.workflows.completions``), each with its own answer.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from memory_service.errors import FieldError, InvalidInput, NotFound
from memory_service.events.fanout import EventFanout
from memory_service.records.tenants import parse_uuid
from memory_service.validation import check_text
from memory_service.workflows import engine
from memory_service.workflows import repository as repo
from memory_service.workflows.completions import (
    Completion,
    CompletionBatcher,
    NextClaim,
    announce_claims,
    check_current,
)
from memory_service.workflows.definitions import QUEUE
from memory_service.workflows.models import Attempt, Run, Step
from memory_service.workflows.service import WorkflowService
from memory_service.workflows.transition import DRIVER, Transition, queue_topic

MAX_WAIT_S = 30.0
MAX_LEASE_S = 3600.0
MIN_LEASE_S = 0.1
MAX_CLAIM = 100
MAX_QUEUES = 20


def check_next_claim(claim: NextClaim, *, internal: bool = False) -> None:
    worker_id = "the attempt's worker" if claim.worker_id is None else claim.worker_id
    check_claim(
        worker_id, claim.queues, claim.max_steps, claim.lease_s, claim.wait_s, internal=internal
    )


class WorkerGateway:
    def __init__(
        self, service: WorkflowService, wakeups: EventFanout, *, poll_interval_s: float = 1.0
    ) -> None:
        self.service = service
        self.wakeups = wakeups
        self.poll_interval_s = poll_interval_s
        self.completions = CompletionBatcher(service)

    async def claim(
        self,
        tenant_id: uuid.UUID | None,
        worker_id: str,
        queues: list[str],
        *,
        max_steps: int = 1,
        lease_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> list[Attempt]:
        """Up to ``max_steps`` attempts, waiting up to ``wait_s`` for the first to come."""
        check_claim(worker_id, queues, max_steps, lease_s, wait_s, internal=tenant_id is None)
        deadline = time.monotonic() + wait_s
        subscription = (
            self.wakeups.subscribe(DRIVER)
            if tenant_id is None
            else self.wakeups.subscribe(*(queue_topic(tenant_id, q) for q in queues))
        )
        try:
            while True:
                subscription.clear()
                async with self.service.transition() as tx:
                    claimed = await repo.claim(
                        tx.conn, tenant_id, queues, max_steps, lease_s, worker_id
                    )
                    announce_claims(tx, claimed)
                left = deadline - time.monotonic()
                if claimed or left <= 0:
                    return claimed
                await subscription.wait(min(left, self.poll_interval_s))
        finally:
            subscription.close()

    async def heartbeat(
        self, tenant_id: uuid.UUID | None, attempt_id: str, token: str, lease_s: float = 30.0
    ) -> datetime:
        """Extend the lease (never past the step's ``timeout_s``)."""
        _check_lease(lease_s)
        async with self.service.transition() as tx:
            row = await _attempt(tx, tenant_id, attempt_id)
            step = await repo.get_step(tx.conn, str(row["step_row"]))
            check_current(row, step, token)
            return await repo.extend_lease(tx.conn, attempt_id, lease_s)

    async def complete(
        self,
        tenant_id: uuid.UUID | None,
        attempt_id: str,
        token: str,
        output: Any,
        *,
        then_claim: NextClaim | None = None,
    ) -> list[Attempt]:
        """Record the output; with ``then_claim``, also claim the worker's next attempts
        in the same transaction (the steps this completion made ready among them), and
        wait up to its ``wait_s`` after the commit when none was ready."""
        self.service.check_json(output, "output")
        if then_claim is not None:
            check_next_claim(then_claim, internal=tenant_id is None)
        parse_uuid(attempt_id, "attempt_id")
        settled = await self.completions.complete(
            Completion(tenant_id, attempt_id, token, output, then_claim)
        )
        if then_claim is None:
            return []
        claimed, worker_id = settled.claimed, settled.worker_id
        if claimed or then_claim.wait_s <= 0:
            return claimed
        return await self.claim(
            tenant_id, worker_id, then_claim.queues, max_steps=then_claim.max_steps,
            lease_s=then_claim.lease_s, wait_s=then_claim.wait_s,
        )  # fmt: skip

    async def fail(
        self, tenant_id: uuid.UUID | None, attempt_id: str, token: str, error: str, retryable: bool
    ) -> None:
        check_text(error, "error", 4000, required=True)

        async def act(tx: Transition, run: Run, step: Step) -> None:
            await repo.finish_attempt(tx.conn, attempt_id, "failed", error)
            await engine.fail_step(tx, run, step, error, retryable=retryable)

        await self._settle(tenant_id, attempt_id, token, act)

    async def _settle(
        self, tenant_id: uuid.UUID | None, attempt_id: str, token: str, act: Any
    ) -> None:
        async with self.service.transition() as tx:
            await self._settle_in(tx, tenant_id, attempt_id, token, act)

    async def _settle_in(
        self, tx: Transition, tenant_id: uuid.UUID | None, attempt_id: str, token: str, act: Any
    ) -> dict[str, Any]:
        row = await _attempt(tx, tenant_id, attempt_id)
        run = await repo.get_run(tx.conn, None, str(row["run_id"]), lock=True)
        step = await repo.get_step(tx.conn, str(row["step_row"]))
        assert run is not None
        check_current(row, step, token)
        assert step is not None
        await act(tx, run, step)
        return row

    async def expire_or_fire(self, run_id: str, step_row: str, why: str) -> None:
        """The driver's half: a due timer fires, an expired lease goes back to the queue."""
        async with self.service.transition() as tx:
            run = await repo.get_run(tx.conn, None, run_id, lock=True)
            step = await repo.get_step(tx.conn, step_row)
            if run is None or step is None or run.status != "running":
                return
            now = await tx.now()
            if why == "timer" and step.status == "scheduled" and step.available_at is not None:
                if step.available_at <= now:
                    await engine.fire_timer(tx, run, step)
            elif (
                why == "lease"
                and step.status == "running"
                and step.lease_expires_at is not None
                and step.lease_expires_at < now
                and step.current_attempt is not None
            ):
                await repo.finish_attempt(tx.conn, step.current_attempt, "expired", "lease expired")
                await engine.fail_step(tx, run, step, "the lease expired", retryable=True)


async def _attempt(tx: Transition, tenant_id: uuid.UUID | None, attempt_id: str) -> dict[str, Any]:
    parse_uuid(attempt_id, "attempt_id")
    row = await repo.attempt_row(tx.conn, tenant_id, attempt_id)
    if row is None:
        raise NotFound(f"attempt {attempt_id} does not exist")
    return row


def _check_lease(lease_s: float) -> None:
    if not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
        raise InvalidInput(
            f"lease_s must be between {MIN_LEASE_S} and {MAX_LEASE_S}",
            errors=[FieldError("lease_s", f"{MIN_LEASE_S}..{MAX_LEASE_S}")],
        )


def check_claim(
    worker_id: str,
    queues: list[str],
    max_steps: int,
    lease_s: float,
    wait_s: float,
    *,
    internal: bool = False,
) -> None:
    check_text(worker_id, "worker_id", 256, required=True)
    if not queues or len(queues) > MAX_QUEUES:
        raise InvalidInput(
            f"queues lists 1 to {MAX_QUEUES} queues", errors=[FieldError("queues", "1..20")]
        )
    for i, queue in enumerate(queues):
        if not internal and (not isinstance(queue, str) or not QUEUE.match(queue)):
            raise InvalidInput(
                f"queues[{i}] is not a queue name (1-64 of a-z 0-9 _ . -)",
                errors=[FieldError(f"queues[{i}]", "queue name")],
            )
    if not 1 <= max_steps <= MAX_CLAIM:
        raise InvalidInput(
            f"max_steps must be between 1 and {MAX_CLAIM}",
            errors=[FieldError("max_steps", f"1..{MAX_CLAIM}")],
        )
    _check_lease(lease_s)
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidInput(
            f"wait_s must be between 0 and {MAX_WAIT_S}",
            errors=[FieldError("wait_s", f"0..{MAX_WAIT_S}")],
        )
