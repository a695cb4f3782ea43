"""Wires tasks, environments, the event log, metrics and the embedder breaker into a runtime.

Everything here runs once per process at start-up (``install``) and leaves its
services in ``runtime.extras``: ``tasks``, ``environments``, ``events``,
``event_writer``, ``event_fanout``, ``event_retention``, ``metrics`` and
``embedder_breaker``. The service records its own operations by subscribing to
the memory, search and task hooks; those subscribers only queue events, so a
request never waits for its event to be written.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from memory_service.environments import EnvironmentService
from memory_service.events.fanout import EventFanout
from memory_service.events.retention import RetentionWorker
from memory_service.events.service import EventService
from memory_service.events.writer import EventWriter
from memory_service.memories.models import Memory, SearchRequest, SearchResult
from memory_service.metrics import ServiceMetrics
from memory_service.resilience import CircuitBreaker, GuardedEmbedder
from memory_service.tasks import Task, TaskService

MAX_IDS_PER_EVENT = 100


def tracer(runtime: Any, name: str) -> trace.Tracer:
    """The app's tracer (create_app leaves its provider in extras), else the global one."""
    provider = runtime.extras.get("tracer_provider")
    return trace.get_tracer(name, tracer_provider=provider)


async def install(runtime: Any) -> None:
    settings = runtime.settings
    metrics = ServiceMetrics()
    metrics.attach(runtime)
    runtime.extras["metrics"] = metrics

    breaker = CircuitBreaker(
        "embedder",
        failure_threshold=settings.breaker_failure_threshold,
        reset_seconds=settings.breaker_reset_seconds,
    )
    runtime.embedder.inner = GuardedEmbedder(
        runtime.embedder.inner,
        breaker,
        tracer=lambda: tracer(runtime, "memory_service.embeddings"),
        observe=metrics.observe_embedding,
    )
    runtime.extras["embedder_breaker"] = breaker

    tasks = TaskService(runtime.pool, runtime.cursors)
    runtime.extras["tasks"] = tasks
    runtime.extras["environments"] = EnvironmentService(
        runtime.pool, runtime.cursors, runtime.secret_box
    )

    fanout = EventFanout(runtime.database_url)
    await fanout.start()
    runtime.closers.append(fanout.close)
    runtime.extras["event_fanout"] = fanout
    runtime.extras["events"] = EventService(
        runtime.pool,
        runtime.cursors,
        fanout,
        max_batch=settings.max_batch_items,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
    )
    writer = EventWriter(runtime.pool, linger_s=runtime.settings.event_writer_linger_ms / 1000)
    writer.start()
    runtime.closers.append(writer.close)  # closes before the fan-out and the pool
    runtime.extras["event_writer"] = writer
    retention = RetentionWorker(
        runtime.pool,
        retention_seconds=settings.event_retention_seconds,
        interval_seconds=settings.event_retention_interval_seconds,
        batch_size=settings.event_retention_batch,
    )
    retention.start()
    runtime.closers.append(retention.close)
    runtime.extras["event_retention"] = retention

    async def on_memories_changed(
        tenant_id: str, upserted: list[Memory], deleted: list[str]
    ) -> None:
        added = [m.id for m in upserted if m.version == 1]
        updated = [m.id for m in upserted if m.version != 1]
        for kind, ids in (("added", added), ("updated", updated), ("deleted", deleted)):
            if ids:
                # ids and counts only: memory content never goes into an event
                await writer.emit(
                    tenant_id,
                    f"memory.{kind}",
                    attributes={"count": len(ids), "memory_ids": ids[:MAX_IDS_PER_EVENT]},
                )

    async def on_search(tenant_id: str, request: SearchRequest, result: SearchResult) -> None:
        # a span for the index search, timed from the result (the query text stays out)
        end = time.time_ns()
        span = tracer(runtime, "memory_service.search").start_span(
            "memory.search",
            start_time=end - int(result.took_ms * 1e6),
            attributes={
                "search.mode": request.mode,
                "search.k": request.k,
                "search.strategy": result.strategy,
                "search.results": len(result.results),
                "search.filtered": request.filter is not None,
            },
        )
        span.end(end_time=end)
        await writer.emit(
            tenant_id,
            "memory.searched",
            severity="debug",
            duration_ms=round(result.took_ms, 3),
            attributes={
                "mode": request.mode,
                "k": request.k,
                "results": len(result.results),
                "strategy": result.strategy,
            },
        )

    async def on_task_status(tenant_id: str, task: Task, old_status: str | None) -> None:
        if old_status is None:
            await writer.emit(
                tenant_id,
                "task.created",
                task_id=task.id,
                agent_id=task.agent_id,
                attributes={"status": task.status, "priority": task.priority},
            )
        else:
            await writer.emit(
                tenant_id,
                "task.status_changed",
                severity="warn" if task.status == "failed" else "info",
                task_id=task.id,
                agent_id=task.agent_id,
                attributes={"from": old_status, "to": task.status},
            )

    runtime.memories.listeners.append(on_memories_changed)
    if hasattr(runtime.memories, "search_listeners"):
        runtime.memories.search_listeners.append(on_search)
    tasks.status_listeners.append(on_task_status)
