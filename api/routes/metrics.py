"""Metrics and health endpoints, and the middleware that measures every request.

``RequestMetricsMiddleware`` times each request under its route *template*,
records 5xx answers as ``error`` events of the tenant, and retries idempotent
reads (GET/HEAD) that hit a 503 while the database circuit is not open, so a
brief database restart is invisible to readers; writes are never retried here. It
also counts the requests in flight (``Runtime.foreground``) that background index
work yields to, leaving out those that mostly wait (streams, long polls).
``GET /metrics`` is the Prometheus exposition (no authentication, no tenant
data); ``/v1/metrics/summary`` and ``/v1/health/score`` need a tenant key.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from msgspec import Struct

from api.limits import SLOT_OPTION
from memory_service.errors import FieldError, InvalidInput
from memory_service.infra import stages
from memory_service.infra.health import HealthComponent, health_score
from memory_service.infra.metrics import OperationSummary
from memory_service.infra.supervisor import LoopState
from memory_service.infra.telemetry import reset_tracer_provider, use_tracer_provider
from memory_service.runtime import Runtime

_WINDOW = re.compile(r"^(\d{1,6})(s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}
STREAMING_ROUTES = ("/v1/events/stream", "/console/events/stream")


def parse_window(text: str) -> float:
    match = _WINDOW.match(text.strip())
    seconds = int(match[1]) * _UNITS[match[2]] if match else 0
    if not 1 <= seconds <= 3600:
        raise InvalidInput(
            "window must look like 30s, 15m or 1h and be at most 1h",
            errors=[FieldError("window", "1s..1h, e.g. 15m")],
        )
    return float(seconds)


class OperationOut(Struct):
    operation: str
    count: int
    errors: int
    client_errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, s: OperationSummary) -> OperationOut:
        return cls(
            s.operation,
            s.count,
            s.errors,
            s.client_errors,
            round(s.error_rate, 6),
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
        )


class SummaryOut(Struct):
    window_seconds: float
    operations: list[OperationOut]


class ComponentOut(Struct):
    name: str
    deduction: float
    status: str
    reason: str

    @classmethod
    def of(cls, c: HealthComponent) -> ComponentOut:
        return cls(c.name, c.score, c.status, c.reason)


class LoopOut(Struct):
    """One supervised background loop (or group of one-shot jobs) of this process."""

    name: str
    kind: str  # loop | jobs
    state: str  # running | restarting | failed | stopped
    restarts: int
    failures: int
    recent_failures: int
    last_error: str | None  # the exception's type; the message is only in the log

    @classmethod
    def of(cls, s: LoopState) -> LoopOut:
        return cls(
            s.name, s.kind, s.state, s.restarts, s.failures, s.recent_failures, s.last_error
        )


class HealthScoreOut(Struct):
    score: int
    status: str
    components: list[ComponentOut]
    reasons: list[str]
    loops: list[LoopOut]


WindowParam = Annotated[str, QueryParameter(max_length=16, description="e.g. 15m, at most 1h")]


@get(
    "/metrics/summary",
    tags=["metrics"],
    summary="The caller's requests per operation: count, error rate, p50/p95/p99 latency",
)
async def metrics_summary(
    runtime: NamedDependency[Runtime],
    tenant_id: NamedDependency[uuid.UUID],
    window: WindowParam = "15m",
) -> SummaryOut:
    seconds = parse_window(window)
    operations = runtime.metrics.summary(seconds, tenant_id=tenant_id)
    return SummaryOut(seconds, [OperationOut.of(s) for s in operations])


@get(
    "/metrics/summary",
    tags=["admin", "metrics"],
    summary="Every request of this process per operation, all tenants together",
)
async def admin_metrics_summary(
    runtime: NamedDependency[Runtime], window: WindowParam = "15m"
) -> SummaryOut:
    seconds = parse_window(window)
    return SummaryOut(seconds, [OperationOut.of(s) for s in runtime.metrics.summary(seconds)])


@get("/health/score", tags=["metrics"], summary="Health 0..100 with the reason for each deduction")
async def health_score_view(runtime: NamedDependency[Runtime]) -> HealthScoreOut:
    report = await health_score(runtime, runtime.metrics)
    return HealthScoreOut(
        report.score,
        report.status,
        [ComponentOut.of(c) for c in report.components],
        report.reasons,
        [LoopOut.of(s) for s in runtime.supervisor.states()],
    )


@get(
    "/metrics",
    tags=["metrics"],
    summary="Prometheus exposition of the service's own metrics",
    include_in_schema=True,
    media_type="text/plain; version=0.0.4",
)
async def prometheus_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime: Runtime = request.app.state.runtime
    return Response(
        runtime.metrics.exposition(), media_type="text/plain; version=0.0.4"
    )


class RequestMetricsMiddleware:
    """Times requests by route template; retries idempotent reads through short outages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
        provider = getattr(scope["app"].state, "tracer_provider", None)
        token = use_tracer_provider(provider) if provider is not None else None
        route = str(scope.get("path_template") or "unmatched")
        method = str(scope.get("method", ""))
        started = time.perf_counter()
        clock, clock_token = stages.start()
        status = 500
        retryable = (
            runtime is not None and method in ("GET", "HEAD") and route not in STREAMING_ROUTES
        )
        attempts = 1 + (runtime.settings.read_retry_attempts if retryable and runtime else 0)
        # a request that waits for something to happen gives background work no reason to
        # wait: event streams, long polls
        foreground = runtime.foreground if runtime is not None and not _waits(scope, route) else None
        if foreground is not None:
            foreground.enter()
        try:
            for attempt in range(attempts):
                held: list[Message] = []
                last = attempt == attempts - 1

                async def guarded_send(
                    message: Message, held: list[Message] = held, last: bool = last
                ) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = int(message["status"])
                        clock.response_started()
                    if not last and status == 503 and not _circuit_open(runtime):
                        held.append(message)  # swallowed: this read is tried again
                        return
                    await send(message)

                await self.app(
                    scope, receive if attempt == 0 else _empty_body(receive), guarded_send
                )
                if not held:
                    break
                await asyncio.sleep(0.25 * (attempt + 1))
        finally:
            if foreground is not None:
                foreground.leave()
            if token is not None:
                reset_tracer_provider(token)
            stages.stop(clock_token)
            if runtime is not None:
                seconds = time.perf_counter() - started
                if route not in STREAMING_ROUTES:
                    runtime.metrics.observe_stages(method, route, clock.breakdown(seconds))
                tenant_id = scope.get("state", {}).get("tenant_id")
                runtime.metrics.observe_request(
                    method,
                    route,
                    status,
                    seconds,
                    streaming=route in STREAMING_ROUTES,
                    tenant_id=tenant_id,
                )
                if status >= 500 and tenant_id:
                    await runtime.event_writer.emit(
                        tenant_id,
                        "error",
                        severity="error",
                        duration_ms=seconds * 1000.0,
                        attributes={"method": method, "route": route, "status": status},
                    )


def _waits(scope: Scope, route: str) -> bool:
    """Whether the request mostly waits (a stream, or a route that holds a slot)."""
    handler = scope.get("route_handler")
    return route in STREAMING_ROUTES or bool(handler and handler.opt.get(SLOT_OPTION))


def _circuit_open(runtime: Runtime | None) -> bool:
    breaker = getattr(getattr(runtime, "pool", None), "breaker", None)
    return breaker is not None and breaker.state == "open"


def _empty_body(receive: Receive) -> Receive:
    """A replay of a body-less request for a retry, then the real connection events."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return replay
