"""One transition of workflow state: a transaction plus what it announces on commit.

A ``Transition`` wraps the connection whose transaction the engine works in. It
collects the progress events (staged in the event outbox inside the same
transaction, so an event exists exactly when its change does; the outbox mover
brings them into the log after commit, without holding the tenant's event lock
across this transaction), the notifications that wake claimers and drivers
(PostgreSQL delivers NOTIFY only on commit), and the runs whose execution
timeline has steps to append after commit.

A commit that makes steps ready wakes as many waiting claimers of their tenant and
queue as it made ready (``NOTIFY workflow_ready, '<tenant> <queue> <count> <origin>'``),
less those it claimed itself; the process that committed wakes its own claimers at
once and skips its own notification when it comes back. Built-in steps and timers
wake the driver (``'driver'``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from memory_service.events import outbox
from memory_service.events.models import NewEvent
from memory_service.workflows.models import Run, Step

CHANNEL = "workflow_ready"  # payload: steps ready in a tenant's queue, or DRIVER
DRIVER = "driver"  # built-in steps or timers changed
ORIGIN = uuid.uuid4().hex[:12]  # this process, in the payloads it sends


def queue_topic(tenant_id: uuid.UUID | str, queue: str) -> str:
    """What a claimer of ``queue`` subscribes to."""
    return f"{tenant_id}/{queue}"


def read_payload(payload: str) -> tuple[str, int | None] | None:
    """A notification's topic and how many claimers it wakes; None for this process's
    own (its claimers were woken at commit)."""
    parts = payload.split(" ")
    if len(parts) != 4:
        return payload, None  # DRIVER, or a name: every subscriber
    tenant, queue, count, origin = parts
    if origin == ORIGIN:
        return None
    try:
        wanted = int(count)
    except ValueError:
        return None
    return queue_topic(tenant, queue), max(wanted, 1)


@dataclass
class Transition:
    conn: AsyncConnection[Any]
    events: dict[uuid.UUID, list[NewEvent]] = field(default_factory=dict)
    wake: set[str] = field(default_factory=set)  # topics every subscriber of wakes up for
    ready: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tenant, queue): steps
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
        if step.queue.startswith("_"):
            self.wake.add(DRIVER)
        else:
            self.ready[(str(step.tenant_id), step.queue)] += 1

    def took(self, tenant_id: uuid.UUID, queue: str) -> None:
        """A step this transaction claimed: one claimer fewer to wake."""
        key = (str(tenant_id), queue)
        if self.ready[key] > 0:
            self.ready[key] -= 1

    def wakeups(self) -> list[tuple[str, int | None]]:
        """The topics to wake in this process after commit, and how many of each."""
        counted = [(queue_topic(t, q), n) for (t, q), n in sorted(self.ready.items()) if n > 0]
        return [*((topic, None) for topic in sorted(self.wake)), *counted]

    def payloads(self) -> list[str]:
        ready = [f"{t} {q} {n} {ORIGIN}" for (t, q), n in sorted(self.ready.items()) if n > 0]
        return [*sorted(self.wake), *ready]

    async def finish(self) -> None:
        """Stage the events and queue the notifications; the caller then commits."""
        if self.events:
            await outbox.stage(self.conn, self.events, self._now)
        payloads = self.payloads()
        if payloads:
            notify = sql.SQL(", ").join(sql.SQL("pg_notify(%s, %s)") for _ in payloads)
            params = [v for payload in payloads for v in (CHANNEL, payload)]
            await self.conn.execute(sql.SQL("SELECT {}").format(notify), params)
