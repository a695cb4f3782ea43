"""One transition of workflow state: a transaction plus what it announces on commit.

A ``Transition`` wraps the connection whose transaction the engine works in. It
collects the progress events (staged in the event outbox inside the same
transaction, so an event exists exactly when its change does; the outbox mover
brings them into the log after commit, without holding the tenant's event lock
across this transaction), the notifications that wake claimers and drivers
(PostgreSQL delivers NOTIFY only on commit), and the runs whose execution
timeline has steps to append after commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from memory_service.events import outbox
from memory_service.events.models import NewEvent
from memory_service.workflows.models import Run, Step

CHANNEL = "workflow_ready"  # payload: a tenant id (its queues changed) or DRIVER
DRIVER = "driver"  # built-in steps or timers changed


@dataclass
class Transition:
    conn: AsyncConnection[Any]
    events: dict[uuid.UUID, list[NewEvent]] = field(default_factory=dict)
    wake: set[str] = field(default_factory=set)
    timelines: set[str] = field(default_factory=set)  # runs whose execution must catch up
    _now: datetime | None = None

    async def now(self) -> datetime:
        """The database's clock, read once per transition (claims compare against it)."""
        if self._now is None:
            cur = await self.conn.execute("SELECT clock_timestamp()")
            row = await cur.fetchone()
            assert row is not None
            self._now = row[0]
        return self._now

    def emit(
        self, type: str, run: Run, step: Step | None = None, *, severity: str = "info", **attrs: Any
    ) -> None:
        if step is not None:
            attrs = {"step_id": step.step_id, "kind": step.kind, **attrs}
        self.emit_for(
            type, run.tenant_id, run.id, run.workflow, run.execution_id, severity=severity, **attrs
        )

    def emit_for(
        self,
        type: str,
        tenant_id: uuid.UUID,
        run_id: str,
        workflow: str,
        execution_id: str | None,
        *,
        severity: str = "info",
        **attrs: Any,
    ) -> None:
        attributes: dict[str, Any] = {"workflow_run_id": run_id, "workflow": workflow}
        attributes.update({k: v for k, v in attrs.items() if v is not None})
        event = NewEvent(
            type=type,
            severity=severity,
            source="memory-service",
            execution_id=execution_id,
            attributes=attributes,
        )
        self.events.setdefault(tenant_id, []).append(event)

    def wake_step(self, step: Step) -> None:
        self.wake.add(DRIVER if step.queue.startswith("_") else str(step.tenant_id))

    async def finish(self) -> None:
        """Stage the events and queue the notifications; the caller then commits."""
        if self.events:
            await outbox.stage(self.conn, self.events, self._now)
        if self.wake:
            payloads = sorted(self.wake)
            notify = sql.SQL(", ").join(sql.SQL("pg_notify(%s, %s)") for _ in payloads)
            params = [v for payload in payloads for v in (CHANNEL, payload)]
            await self.conn.execute(sql.SQL("SELECT {}").format(notify), params)
