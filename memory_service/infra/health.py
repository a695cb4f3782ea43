"""The health score: 100 minus deductions, each component saying why it deducted.

Reads the windowed request summaries of ``ServiceMetrics`` (error rate, p95
latency), the database readiness check, every circuit breaker, each index's
reported lag and the background supervisor's components, and turns them into a
``HealthReport`` with a status (healthy, degraded, unhealthy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from memory_service.infra.metrics import ServiceMetrics, breakers, index_statuses


@dataclass(slots=True)
class HealthComponent:
    name: str
    score: float  # points deducted from 100
    status: str  # ok | degraded | failing | unknown
    reason: str


@dataclass(slots=True)
class HealthReport:
    score: int
    status: str
    components: list[HealthComponent] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.components if c.score > 0]


async def health_score(runtime: Any, metrics: ServiceMetrics) -> HealthReport:
    """100 minus deductions, each component saying why it deducted."""
    settings = runtime.settings
    window = settings.health_window_seconds
    components: list[HealthComponent] = []
    overall = metrics.overall(window)
    if overall is None:
        components.append(HealthComponent("error_rate", 0, "ok", "no requests in the window"))
        components.append(HealthComponent("latency", 0, "ok", "no requests in the window"))
    else:
        rate = overall.error_rate
        deduction = min(40.0, rate * 400.0)  # 10% server errors costs all 40 points
        components.append(
            HealthComponent(
                "error_rate",
                round(deduction, 1),
                _status(deduction, 40),
                f"{rate:.1%} of {overall.count} requests failed with 5xx in the last {window:g}s",
            )
        )
        target = settings.health_latency_target_ms
        over = max(0.0, overall.p95_ms / target - 1.0)
        deduction = min(20.0, over * 20.0)  # p95 at twice the target costs all 20
        components.append(
            HealthComponent(
                "latency",
                round(deduction, 1),
                _status(deduction, 20),
                f"p95 latency {overall.p95_ms:.1f} ms against a target of {target:g} ms",
            )
        )
    checks = await runtime.ready()
    db_ok = checks.get("database") == "ok"
    components.append(
        HealthComponent(
            "database",
            0 if db_ok else 40,
            "ok" if db_ok else "failing",
            "database reachable" if db_ok else f"database {checks.get('database', 'unknown')}",
        )
    )
    for breaker in breakers(runtime):
        state = breaker.state
        deduction = {"closed": 0.0, "half_open": 10.0, "open": 25.0}[state]
        components.append(
            HealthComponent(
                f"circuit.{breaker.name}",
                deduction,
                _status(deduction, 25),
                f"the {breaker.name} circuit is {state.replace('_', '-')}",
            )
        )
    for name, reported in index_statuses(runtime).items():
        lag_value = reported.get("lag_seconds")
        if "error" in reported:
            components.append(
                HealthComponent(
                    f"index.{name}",
                    10,
                    "failing",
                    f"index {name} cannot report: {reported['error']}",
                )
            )
        elif isinstance(lag_value, int | float) and math.isfinite(lag_value):
            stale = settings.index_stale_seconds
            deduction = min(10.0, max(0.0, lag_value / stale - 1.0) * 10.0)
            components.append(
                HealthComponent(
                    f"index.{name}",
                    round(deduction, 1),
                    _status(deduction, 10),
                    f"index {name} trails the database by {lag_value:.1f}s (stale after {stale:g}s)",
                )
            )
    components += runtime.supervisor.health_components()
    score = max(0, min(100, round(100 - sum(c.score for c in components))))
    status = "healthy" if score >= 90 else "degraded" if score >= 60 else "unhealthy"
    return HealthReport(score, status, components)


def _status(deduction: float, full: float) -> str:
    if deduction <= 0:
        return "ok"
    return "failing" if deduction >= full else "degraded"
