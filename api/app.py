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
from api.errors import EXCEPTION_HANDLERS
from api.routes.environments import EnvironmentController
from api.routes.events import EventController
from api.routes.health import health, ready
from api.routes.memories import MemoryController
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
from memory_service.config import Settings
from memory_service.embeddings import Embedder
from memory_service.environments import EnvironmentService
from memory_service.events import EventService
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

log = logging.getLogger(__name__)

# Each feature adds its controllers to one of these lists.
TenantRoutes: list[Any] = [MemoryController]  # under /v1, tenant API key required
TenantRoutes.append(RetrievalSettingsController)
AdminRoutes: list[Any] = [TenantController]  # under /v1/admin, admin token required
PublicRoutes: list[Any] = [health, ready]  # no authentication
TenantRoutes.extend(
    [TaskController, EnvironmentController, EventController, metrics_summary, health_score_view]
)
PublicRoutes.append(prometheus_metrics)
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
)


def _state_getter(name: str) -> Callable[[State], Any]:
    def provide(state: State) -> Any:
        runtime = state.runtime
        return runtime if name == "runtime" else getattr(runtime, name)

    return provide


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
        guards=[require_tenant],
        dependencies={"tenant_id": Provide(provide_tenant_id, sync_to_thread=False)},
        security=security,
    )
    admin_router = Router(
        path="/v1/admin", route_handlers=AdminRoutes, guards=[require_admin], security=security
    )
    otel = OpenTelemetryConfig(
        tracer_provider=tracer_provider,
        exclude=["/health"],
        # a span per ASGI message (three per request) costs about 25 us each and says
        # nothing the request span does not
        exclude_spans=["receive", "send"],
    )
    return Litestar(
        route_handlers=[*PublicRoutes, tenant_router, admin_router],
        lifespan=[lifespan],
        dependencies={
            name: Provide(_state_getter(name), sync_to_thread=False)
            for name in PROVIDED
        },
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=[OpenTelemetryPlugin(otel)],
        middleware=[RequestMetricsMiddleware],
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
        ],
        debug=False,
    )


DEFAULT_STARTUP_HOOKS: list[StartupHook] = []
