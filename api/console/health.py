"""The health page: the score with its reasons, and charts of the caller's traffic.

The score and its components come from ``memory_service.infra.health.health_score``
(the same as ``GET /v1/health/score``); the charts draw the tenant's metrics
summary (as ``GET /v1/metrics/summary``): requests per minute, error share and
p50/p95/p99 latency per operation. The charts refresh in place every 15 s.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from api.console.charts import Bar, BarChart, Group, bar_chart
from api.console.rendering import is_htmx, page
from api.routes.metrics import parse_window
from memory_service.infra.health import health_score
from memory_service.infra.metrics import OperationSummary, ServiceMetrics
from memory_service.runtime import Runtime

WINDOWS = ("5m", "15m", "1h")


def traffic_charts(operations: list[OperationSummary], seconds: float) -> list[BarChart]:
    minutes = seconds / 60.0
    ops = sorted(operations, key=lambda o: -o.count)[:12]
    rate = [
        Group(o.operation, [Bar("rate", o.count / minutes, f"{o.count / minutes:.2f}/min")])
        for o in ops
    ]
    errors = [
        Group(o.operation, [Bar("errors", o.error_rate * 100, f"{o.error_rate:.1%}")]) for o in ops
    ]
    latency = [
        Group(
            o.operation,
            [
                Bar("p50", o.p50_ms, f"p50 {o.p50_ms:.1f} ms"),
                Bar("p95", o.p95_ms, f"p95 {o.p95_ms:.1f} ms"),
                Bar("p99", o.p99_ms, f"p99 {o.p99_ms:.1f} ms"),
            ],
        )
        for o in ops
    ]
    return [
        bar_chart("Request rate", rate, unit="requests/min", digits=2),
        bar_chart("Error share (5xx)", errors, unit="% of requests"),
        bar_chart("Latency", latency, unit="ms"),
    ]


class HealthPageController(Controller):
    path = "/health"
    include_in_schema = False

    @get("/")
    async def health_page(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        tenant_id: NamedDependency[uuid.UUID],
        window: FromQuery[str] = "15m",
    ) -> Template:
        seconds = parse_window(window)
        metrics: ServiceMetrics = runtime.metrics
        report = await health_score(runtime, metrics)
        operations = metrics.summary(seconds, tenant_id=tenant_id)
        context: dict[str, Any] = {
            "report": report,
            "operations": operations,
            "charts": traffic_charts(operations, seconds),
            "window": window,
            "windows": WINDOWS,
        }
        if is_htmx(request):
            return page(request, "health/_panel.html", **context)
        return page(request, "health/page.html", active="health", **context)
