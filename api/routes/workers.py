"""Workers over HTTP: claim step attempts (long poll), then heartbeat, complete or fail each.

``POST /v1/workers/claim`` answers 200 with attempts and their lease tokens, or
204 when none came within ``wait_s``. Every later call on an attempt carries its
``lease_token``; a stale, repeated or late one is a 409 that changes nothing.
``complete`` with a ``claim`` also claims the worker's next attempts, answered as
``claimed`` (empty when none came within its ``wait_s``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from msgspec import Struct

from api.dependencies import runtime_of, tenant_of
from api.limits import hold_slot
from api.schemas import Strict
from memory_service.workflows import Attempt, NextClaim, WorkerGateway


class ClaimIn(Strict):
    worker_id: str
    queues: list[str]
    max_steps: int = 1
    lease_s: float = 30.0
    wait_s: float = 0.0


class AttemptOut(Struct):
    id: str
    lease_token: str
    run_id: str
    workflow: str
    step_id: str
    kind: str
    queue: str
    attempt: int
    input: Any
    available_at: datetime
    claimed_at: datetime
    lease_expires_at: datetime
    deadline_at: datetime | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            a.id,
            a.lease_token,
            a.run_id,
            a.workflow,
            a.step_id,
            a.kind,
            a.queue,
            a.number,
            a.input,
            a.available_at,
            a.claimed_at,
            a.lease_expires_at,
            a.deadline_at,
        )


class ClaimOut(Struct):
    items: list[AttemptOut]


class HeartbeatIn(Strict):
    lease_token: str
    lease_s: float = 30.0


class HeartbeatOut(Struct):
    lease_expires_at: datetime


class ClaimNextIn(Strict):
    queues: list[str]
    max_steps: int = 1
    lease_s: float = 30.0
    wait_s: float = 0.0
    worker_id: str | None = None  # the completed attempt's worker when absent


class CompleteIn(Strict):
    lease_token: str
    output: Any = None
    claim: ClaimNextIn | None = None  # claim the next attempts in the same request


class FailIn(Strict):
    lease_token: str
    error: str
    retryable: bool = True


class SettledOut(Struct, omit_defaults=True):
    id: str
    status: str
    claimed: list[AttemptOut] | None = None  # only when the completion asked to claim


def gateway_of(request: Request[Any, Any, Any]) -> WorkerGateway:
    """Claims and completions are every worker's hot path: they read their service and
    tenant off the request rather than through two providers (see api/dependencies.py)."""
    return runtime_of(request).workflows.workers


class WorkerController(Controller):
    path = "/workers"
    tags = ["workers"]

    @post(
        "/claim",
        status_code=200,
        summary="Claim ready steps of the given queues; waits up to wait_s (<= 30), else 204",
        responses={204: ResponseSpec(data_container=None, description="nothing came in wait_s")},
    )
    async def claim(
        self, data: JSONBody[ClaimIn], request: Request[Any, Any, Any]
    ) -> Response[ClaimOut | None]:
        workers, tenant_id = gateway_of(request), tenant_of(request)
        if data.wait_s > 0:  # a long poll: at most MEMORY_TENANT_MAX_LONG_POLLS per tenant
            hold_slot(request, "long_poll")
        claimed = await workers.claim(
            tenant_id,
            data.worker_id,
            data.queues,
            max_steps=data.max_steps,
            lease_s=data.lease_s,
            wait_s=data.wait_s,
        )
        if not claimed:
            return Response(None, status_code=204)
        return Response(ClaimOut([AttemptOut.of(a) for a in claimed]), status_code=200)

    @post("/attempts/{attempt_id:str}/heartbeat", status_code=200, summary="Extend a lease")
    async def heartbeat(
        self,
        attempt_id: FromPath[str],
        data: JSONBody[HeartbeatIn],
        workers: NamedDependency[WorkerGateway],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> HeartbeatOut:
        until = await workers.heartbeat(tenant_id, attempt_id, data.lease_token, data.lease_s)
        return HeartbeatOut(until)

    @post(
        "/attempts/{attempt_id:str}/complete",
        status_code=200,
        summary="Record the output; with claim, also claim the next attempts",
    )
    async def complete(
        self, attempt_id: FromPath[str], data: JSONBody[CompleteIn], request: Request[Any, Any, Any]
    ) -> SettledOut:
        workers, tenant_id = gateway_of(request), tenant_of(request)
        then = data.claim
        next_claim = None if then is None else NextClaim(
            then.queues, then.max_steps, then.lease_s, then.wait_s, then.worker_id
        )  # fmt: skip
        claimed = await workers.complete(
            tenant_id, attempt_id, data.lease_token, data.output, then_claim=next_claim
        )
        if next_claim is None:
            return SettledOut(attempt_id, "completed")
        return SettledOut(attempt_id, "completed", [AttemptOut.of(a) for a in claimed])

    @post("/attempts/{attempt_id:str}/fail", status_code=200, summary="Report a failure")
    async def fail(
        self,
        attempt_id: FromPath[str],
        data: JSONBody[FailIn],
        workers: NamedDependency[WorkerGateway],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> SettledOut:
        await workers.fail(tenant_id, attempt_id, data.lease_token, data.error, data.retryable)
        return SettledOut(attempt_id, "failed")
