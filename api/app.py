"""The app factory: ``create_app(settings)`` builds the Litestar application.

The lifespan starts the core ``Runtime`` (database, migrations, model, services)
and closes it on shutdown; handlers receive services through ``Provide``.
There are no module-level singletons and no work at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from api.auth import provide_tenant_id, require_admin, require_tenant
from api.console import console_router, template_config
from api.errors import EXCEPTION_HANDLERS
from api.input_guard import check_request
from api.limits import TenantSlotMiddleware, enforce_tenant_limits
from api.openapi import AllowHeaderMiddleware, allowed_methods, document_problems
from api.routes.changes import ChangeController
from api.routes.environments import EnvironmentController
from api.routes.events import EventController
from api.routes.execution_travel import ExecutionTravelController
from api.routes.executions import ExecutionController
from api.routes.health import health, ready
from api.routes.memories import MemoryController
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
from memory_service.changes import ChangeFeed
from memory_service.config import Settings
from memory_service.embeddings import Embedder
from memory_service.environments import EnvironmentService
from memory_service.events import EventService
from memory_service.executions import ExecutionService
from memory_service.memories.as_of import MemoriesAsOf
from memory_service.memories.keyed import KeyedMemories
from memory_service.memories.service import MemoryService
from memory_service.retrieval.settings import RetrievalSettingsService
from memory_service.runtime import Runtime
from memory_service.search.service import SearchService
from memory_service.tasks import TaskService
from memory_service.telemetry import (
    build_tracer_provider,
    instrument_psycopg,
    use_tracer_provider,
)
from memory_service.tenants import TenantService
from memory_service.transfer.migration import MigrationService
from memory_service.transfer.service import TransferService
from memory_service.workflows import WorkerGateway, WorkflowService

log = logging.getLogger(__name__)

# Each feature adds its controllers to one of these lists.
TenantRoutes: list[Any] = [MemoryController]  # under /v1, tenant API key required
TenantRoutes.append(RetrievalSettingsController)
TenantRoutes.append(KeyedMemoryController)
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
# runtime fields handed to handlers by name ("runtime" is the whole of it)
PROVIDED = (
    "runtime",
    "memories",
    "search",
    "tenants",
    "tasks",
    "environments",
    "events",
    "retrieval_settings",
    "keyed_memories",
    "memories_as_of",
    "changes",
    "executions",
    "migrations",
    "transfers",
)


def _state_getter(name: str) -> Callable[[State], Any]:
    def provide(state: State) -> Any:
        runtime = state.runtime
        return runtime if name == "runtime" else getattr(runtime, name)

    return provide


def _provide_workflows(state: State) -> WorkflowService:
    return state.runtime.workflows.service


def _provide_workers(state: State) -> WorkerGateway:
    return state.runtime.workflows.workers


def create_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    span_exporter: SpanExporter | None = None,
    startup_hooks: list[StartupHook] | None = None,
) -> Litestar:
    """Build the application. ``embedder`` and ``span_exporter`` are test seams."""
    tracer_provider: TracerProvider = build_tracer_provider(settings, span_exporter)
    instrument_psycopg(tracer_provider)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # database spans of start-up and of background tasks go to this app's provider
        use_tracer_provider(tracer_provider)
        runtime = await Runtime.start(
            settings, embedder=embedder, tracer_provider=tracer_provider
        )
        app.state.runtime = runtime
        app.state.tenants = runtime.tenants
        app.state.settings = settings
        app.state.tracer_provider = tracer_provider
        try:
            for hook in [*DEFAULT_STARTUP_HOOKS, *(startup_hooks or [])]:
                result = hook(runtime)
                if hasattr(result, "__await__"):
                    await result
            yield
        finally:
            await runtime.close()
            tracer_provider.shutdown()

    security: list[dict[str, list[str]]] = [{"BearerAuth": []}]
    tenant_router = Router(
        path="/v1",
        route_handlers=TenantRoutes,
        guards=[require_tenant, enforce_tenant_limits, check_request],
        dependencies={"tenant_id": Provide(provide_tenant_id, sync_to_thread=False)},
        security=security,
    )
    admin_router = Router(
        path="/v1/admin", route_handlers=AdminRoutes, guards=[require_admin, check_request], security=security
    )
    otel = OpenTelemetryConfig(
        tracer_provider=tracer_provider,
        exclude=["/health"],
        # a span per ASGI message (three per request) costs about 25 us each and says
        # nothing the request span does not
        exclude_spans=["receive", "send"],
    )
    app = Litestar(
        route_handlers=[*PublicRoutes, tenant_router, admin_router, console_router()],
        template_config=template_config(),
        lifespan=[lifespan],
        dependencies={
            **{name: Provide(_state_getter(name), sync_to_thread=False) for name in PROVIDED},
            "workflows": Provide(_provide_workflows, sync_to_thread=False),
            "workers": Provide(_provide_workers, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=[OpenTelemetryPlugin(otel)],
        middleware=[RequestMetricsMiddleware, TenantSlotMiddleware(), AllowHeaderMiddleware()],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="memory-service",
            version="1.0.0",
            description="Agent memory and semantic search over PostgreSQL + pgvector.",
            path="/schema",
            components=Components(
                security_schemes={"BearerAuth": SecurityScheme(type="http", scheme="bearer")}
            ),
        ),
        signature_types=[
            MemoryService,
            SearchService,
            TenantService,
            Runtime,
            TaskService,
            EnvironmentService,
            EventService,
            RetrievalSettingsService,
            ExecutionService,
            MemoriesAsOf,
            WorkflowService,
            WorkerGateway,
            ChangeFeed,
            MigrationService,
            TransferService,
            KeyedMemories,
        ],
        debug=False,
    )
    document_problems(app, settings)
    app.state.allowed_methods = allowed_methods(app)
    return app


DEFAULT_STARTUP_HOOKS: list[StartupHook] = []
