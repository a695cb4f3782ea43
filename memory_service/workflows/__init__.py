"""Durable workflows on PostgreSQL: definitions, runs, workers' claims, timers and signals.

``Workflows`` bundles what a process runs: the ``WorkflowService`` (definitions,
runs, operator commands), the ``WorkerGateway`` (claims, heartbeats,
completions), the LISTEN connection that wakes long polls, and the background
``WorkflowDriver``. ``Workflows.build`` makes them with explicit arguments, ``start``
starts the listener and the driver; ``close`` stops them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.events.fanout import EventFanout
from memory_service.events.outbox import OutboxMover
from memory_service.executions import ExecutionService
from memory_service.infra.pagination import CursorCodec
from memory_service.infra.supervisor import Supervisor
from memory_service.memories.service import MemoryService
from memory_service.search.service import SearchService
from memory_service.workflows.builtins import MemorySteps
from memory_service.workflows.driver import WorkflowDriver
from memory_service.workflows.models import Attempt, Definition, Run, RunQuery, Step
from memory_service.workflows.service import WorkflowService
from memory_service.workflows.timeline import RunTimeline
from memory_service.workflows.transition import CHANNEL, read_payload
from memory_service.workflows.workers import NextClaim, WorkerGateway

__all__ = [
    "Attempt",
    "Definition",
    "NextClaim",
    "Run",
    "RunQuery",
    "Step",
    "WorkerGateway",
    "WorkflowDriver",
    "WorkflowService",
    "Workflows",
]


@dataclass
class Workflows:
    service: WorkflowService
    workers: WorkerGateway
    driver: WorkflowDriver
    wakeups: EventFanout
    timeline: RunTimeline
    run_driver: bool

    @classmethod
    def build(
        cls,
        settings: Settings,
        database_url: str,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        memories: MemoryService,
        search: SearchService,
        executions: ExecutionService,
        supervisor: Supervisor,
        outbox: OutboxMover,
    ) -> Workflows:
        wakeups = EventFanout(
            database_url,
            supervisor=supervisor,
            channel=CHANNEL,
            name="workflow-wakeups",
            parse=read_payload,
        )
        timeline = RunTimeline(pool, executions, supervisor)
        service = WorkflowService(
            pool,
            cursors,
            max_json_bytes=settings.workflow_max_json_bytes,
            timeline=timeline,
            wake_local=wakeups.wake,
            outbox=outbox,
        )
        workers = WorkerGateway(service, wakeups, poll_interval_s=settings.workflow_poll_interval_s)
        driver = WorkflowDriver(
            workers,
            wakeups,
            MemorySteps(memories, search),
            supervisor=supervisor,
            concurrency=settings.workflow_driver_concurrency,
            poll_interval_s=settings.workflow_poll_interval_s,
        )
        return cls(service, workers, driver, wakeups, timeline, settings.workflow_driver_enabled)

    async def start(self) -> None:
        await self.wakeups.start()
        self.timeline.start()
        if self.run_driver:
            self.driver.start()

    async def close(self) -> None:
        await self.driver.close()
        await self.timeline.close()
        await self.wakeups.close()
