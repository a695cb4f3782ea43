"""Value types of workflows: definitions, runs, step states and claimed attempts.

Rows leave the repository as these dataclasses, never as dicts, so the engine and
the HTTP layer read named, typed fields.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RUN_STATUSES = ("running", "completed", "failed", "cancelled")
STEP_STATUSES = ("pending", "ready", "running", "scheduled", "completed", "failed", "cancelled")
ACTIVE_STEP = ("pending", "ready", "running", "scheduled")


@dataclass(slots=True)
class Definition:
    id: str
    name: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    digest: str = ""

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.definition["steps"])


@dataclass(slots=True)
class Step:
    row: str  # the step row's uuid
    run_id: str
    tenant_id: uuid.UUID
    step_id: str
    parent_step: str | None
    item_index: int | None
    position: int
    kind: str
    queue: str
    status: str
    depends_on: list[str]
    pending_deps: int
    children_left: int | None
    spec: dict[str, Any]
    input: Any
    output: Any
    error: str | None
    attempts: int
    retry_base: int
    available_at: datetime | None
    current_attempt: str | None
    lease_expires_at: datetime | None
    reused: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    timeline_seq: int | None = None  # read only where the timeline needs it

    @property
    def budget_used(self) -> int:
        """Attempts since the run was last retried."""
        return self.attempts - self.retry_base

    @property
    def max_attempts(self) -> int:
        return int(self.spec["retry"]["max_attempts"])


@dataclass(slots=True)
class Run:
    id: str
    tenant_id: uuid.UUID
    definition_id: str
    workflow: str
    version: int
    status: str
    input: Any
    output: Any
    error: str | None
    idempotency_key: str | None
    forked_from: str | None
    fork_step: str | None
    execution_id: str | None
    timeline_closed: bool
    steps_total: int
    steps_completed: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    seq: int = 0
    steps: list[Step] = field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    """One delivery of a step to a worker, with the lease token that proves it."""

    id: str
    tenant_id: uuid.UUID
    run_id: str
    step_row: str
    step_id: str
    workflow: str
    kind: str
    queue: str
    number: int
    worker_id: str
    lease_token: str
    input: Any
    available_at: datetime
    claimed_at: datetime
    lease_expires_at: datetime
    deadline_at: datetime | None
    execution_id: str | None = None


@dataclass(slots=True)
class RunQuery:
    workflow: str | None = None
    status: str | None = None
