"""The app factory: ``create_app(settings)`` builds the Litestar application.

The lifespan starts the core ``Runtime`` (database, migrations, model, services)
and closes it on shutdown; handlers receive its services through the typed
providers of ``api.dependencies``.
There are no module-level singletons and no work at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import BeforeMessageSendHookHandler, BeforeRequestHookHandler, Message, Scope
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from api.auth import provide_tenant_id, require_admin, require_tenant
from api.consistency import ConsistencyMiddleware
from api.console import console_router, template_config
from api.contract import state_rules
from api.dependencies import DEPENDENCIES, SIGNATURE_TYPES
from api.errors import EXCEPTION_HANDLERS
from api.input_guard import check_request
from api.limits import AdmissionMiddleware, TenantSlotMiddleware, enforce_tenant_limits
from api.openapi import AllowHeaderMiddleware, allowed_methods, document_problems
from api.routes.changes import ChangeController
from api.routes.environments import EnvironmentController
from api.routes.events import EventController
from api.routes.execution_travel import ExecutionTravelController
from api.routes.executions import ExecutionController
from api.routes.health import health, ready
from api.routes.memories import MemoryController
from api.routes.memory_import import MemoryImportController
from api.routes.memory_keys import KeyedMemoryController
from api.routes.metrics import (
    RequestMetricsMiddleware,
    admin_metrics_summary,
    health_score_view,
    metrics_summary,
    prometheus_metrics,
)
from api.routes.retrieval_settings import RetrievalSettingsController
from api.routes.tasks import TaskController
from api.routes.tenants import TenantController
from api.routes.transfer import MigrationController, TransferController
from api.routes.workers import WorkerController
from api.routes.workflows import WorkflowController, WorkflowRunController
from api.stage_timing import TimedRequest, mark_handled, timed_guard
from api.trace_context import UNTRACED, TraceContextMiddleware
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.infra.telemetry import (
    build_tracer_provider,
    instrument_psycopg,
    records_spans,
    use_tracer_provider,
)
from memory_service.runtime import Runtime

log = logging.getLogger(__name__)

# Each feature adds its controllers to one of these lists.
TenantRoutes: list[Any] = [MemoryController]  # under /v1, tenant API key required
TenantRoutes.append(RetrievalSettingsController)
TenantRoutes.append(KeyedMemoryController)
TenantRoutes.append(MemoryImportController)
AdminRoutes: list[Any] = [TenantController]  # under /v1/admin, admin token required
PublicRoutes: list[Any] = [health, ready]  # no authentication
TenantRoutes.extend(
    [TaskController, EnvironmentController, EventController, metrics_summary, health_score_view]
)
TenantRoutes.extend([WorkflowController, WorkflowRunController, WorkerController])
TenantRoutes.append(ChangeController)
PublicRoutes.append(prometheus_metrics)
TenantRoutes.extend([ExecutionController, ExecutionTravelController])
TenantRoutes.extend([MigrationController, TransferController])
AdminRoutes.append(admin_metrics_summary)
StartupHook = Callable[[Runtime], Any]
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


OPENAPI = OpenAPIConfig(
    title="memory-service",
    version="1.0.0",
    description="Agent memory and semantic search over PostgreSQL + pgvector.",
    path="/schema",
    components=Components(
        security_schemes={"BearerAuth": SecurityScheme(type="http", scheme="bearer")}
    ),
)


def _guarded_routers() -> list[Router]:
    security: list[dict[str, list[str]]] = [{"BearerAuth": []}]
    tenant_router = Router(
        path="/v1",
        route_handlers=TenantRoutes,
        before_request=in_order(
            timed_guard("auth", require_tenant),
            timed_guard("admission", enforce_tenant_limits),
            timed_guard("parse", check_request),
        ),
        dependencies={"tenant_id": Provide(provide_tenant_id, sync_to_thread=False)},
        security=security,
    )
    admin_router = Router(
        path="/v1/admin",
        route_handlers=AdminRoutes,
        before_request=in_order(timed_guard("auth", require_admin), timed_guard("parse", check_request)),
        security=security,
    )
    return [tenant_router, admin_router]


def _tracing(
    settings: Settings, provider: TracerProvider, span_exporter: SpanExporter | None
) -> tuple[list[Any], list[Any]]:
    """(plugins, middleware) that trace requests: the full ASGI instrumentation when
    spans are exported, the light trace context when only their ids are used, none
    when tracing is off."""
    if settings.trace_exporter in ("console", "otlp") or span_exporter is not None:
        otel = OpenTelemetryConfig(
            tracer_provider=provider,
            exclude=sorted(UNTRACED),
            # a span per ASGI message (three per request) costs about 25 us each and says
            # nothing the request span does not
            exclude_spans=["receive", "send"],
        )
        return [OpenTelemetryPlugin(otel)], []
    if settings.trace_exporter == "off":
        return [], []
    return [], [DefineMiddleware(TraceContextMiddleware, tracer_provider=provider)]


def in_order(*guards: Guard) -> BeforeRequestHookHandler:
    """Runs ``guards`` in order before each request of a router (before its parameters
    and body are read). As a router's guards, Litestar would copy the route handler for
    every guard it calls: about 6% of a search in the process for three guards, and
    still a copy for one."""

    async def checks(request: Request[Any, Any, Any]) -> None:
        handler = request.route_handler
        for each in guards:
            await each(request, handler)

    return checks


def served_by(replica_id: str) -> BeforeMessageSendHookHandler:
    """Adds ``X-Served-By: <replica_id>`` to every response: behind a proxy, which
    replica answered is then visible to clients, logs and tests."""
    header = (b"x-served-by", replica_id.encode("latin-1", "replace"))

    async def add_header(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]

    return add_header


def create_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    span_exporter: SpanExporter | None = None,
    startup_hooks: list[StartupHook] | None = None,
) -> Litestar:
    """Build the application. ``embedder`` and ``span_exporter`` are test seams."""
    tracer_provider: TracerProvider = build_tracer_provider(settings, span_exporter)
    tracing = settings.trace_exporter != "off" or span_exporter is not None
    if records_spans(tracer_provider):
        # a database span costs every query a span started and ended; unrecorded, it
        # would only ever be thrown away
        instrument_psycopg(tracer_provider)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # database spans of start-up and of background tasks go to this app's provider
        use_tracer_provider(tracer_provider)
        runtime = await Runtime.start(
            settings,
            embedder=embedder,
            tracer_provider=tracer_provider if tracing else trace.NoOpTracerProvider(),
        )
        app.state.runtime = runtime
        app.state.tenants = runtime.tenants
        app.state.settings = settings
        app.state.tracer_provider = tracer_provider
        state_rules(app, settings, runtime.embedder.dimension)
        try:
            for hook in [*DEFAULT_STARTUP_HOOKS, *(startup_hooks or [])]:
                result = hook(runtime)
                if hasattr(result, "__await__"):
                    await result
            yield
        finally:
            await runtime.close()
            tracer_provider.shutdown()

    plugins, tracing_middleware = _tracing(settings, tracer_provider, span_exporter)
    app = Litestar(
        route_handlers=[*PublicRoutes, *_guarded_routers(), console_router()],
        template_config=template_config(),
        lifespan=[lifespan],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=plugins,
        middleware=[
            *tracing_middleware,
            RequestMetricsMiddleware,
            # before the guards and the body: refusing a flood must cost less than serving it
            AdmissionMiddleware,
            # tokens and standby reads exist only with standbys: no extra layer without
            *([ConsistencyMiddleware] if settings.database_replica_urls else []),
            TenantSlotMiddleware(),
            AllowHeaderMiddleware(),
        ],
        before_send=[served_by(settings.replica_id)] if settings.replica_id else [],
        request_max_body_size=settings.max_body_bytes,
        request_class=TimedRequest,
        after_request=mark_handled,
        openapi_config=OPENAPI,
        signature_types=SIGNATURE_TYPES,
        debug=False,
    )
    document_problems(app, settings)
    app.state.allowed_methods = allowed_methods(app)
    return app


DEFAULT_STARTUP_HOOKS: list[StartupHook] = []
