"""The service's record of its own operations: memory changes, searches, task changes.

``OperationRecorder`` is handed to ``MemoryService``, ``SearchService`` and
``TaskService`` as a listener at construction. Its methods only queue events on
the ``EventWriter`` (and end a span for a search), so a request never waits for
its event to be written. Events carry ids and counts, never memory content or
query text.
"""

from __future__ import annotations

import time
import uuid

from opentelemetry import trace

from memory_service.events.writer import EventWriter
from memory_service.infra.telemetry import records_spans
from memory_service.memories.models import Memory, SearchRequest, SearchResult
from memory_service.records.task_models import Task

MAX_IDS_PER_EVENT = 100


class OperationRecorder:
    def __init__(
        self,
        writer: EventWriter,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        record_searches: bool = True,
    ) -> None:
        self.writer = writer
        self.tracer = trace.get_tracer("memory_service.search", tracer_provider=tracer_provider)
        # a search's span is started after the fact, with its attributes: about 40 us a
        # search, spent for nothing when no span is ever recorded
        self.search_spans = records_spans(tracer_provider)
        self.record_searches = record_searches

    async def memories_changed(
        self, tenant_id: uuid.UUID, upserted: list[Memory], deleted: list[str]
    ) -> None:
        added = [m.id for m in upserted if m.version == 1]
        updated = [m.id for m in upserted if m.version != 1]
        for kind, ids in (("added", added), ("updated", updated), ("deleted", deleted)):
            if ids:
                await self.writer.emit(
                    tenant_id,
                    f"memory.{kind}",
                    attributes={"count": len(ids), "memory_ids": ids[:MAX_IDS_PER_EVENT]},
                )

    async def searched(
        self, tenant_id: uuid.UUID, request: SearchRequest, result: SearchResult
    ) -> None:
        if self.search_spans:
            self._search_span(request, result)
        if not self.record_searches:
            return
        await self.writer.emit(
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

    def _search_span(self, request: SearchRequest, result: SearchResult) -> None:
        # a span for the index search, timed from the result (the query text stays out)
        end = time.time_ns()
        span = self.tracer.start_span(
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

    async def task_status(self, tenant_id: uuid.UUID, task: Task, old_status: str | None) -> None:
        if old_status is None:
            await self.writer.emit(
                tenant_id,
                "task.created",
                task_id=task.id,
                agent_id=task.agent_id,
                attributes={"status": task.status, "priority": task.priority},
            )
            return
        await self.writer.emit(
            tenant_id,
            "task.status_changed",
            severity="warn" if task.status == "failed" else "info",
            task_id=task.id,
            agent_id=task.agent_id,
            attributes={"from": old_status, "to": task.status},
        )
