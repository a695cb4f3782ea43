"""What a task is: its fields, its statuses and how they may change, and a listing query.

The rules and SQL that act on tasks live in ``tasks.py``; these are the plain values
the service, the HTTP layer, the console and the data transfer share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
FINISHED = frozenset({"completed", "failed", "cancelled"})
PRIORITIES = ("low", "medium", "high", "urgent")
# where each status may go by an ordinary update; finished tasks need reopen()
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"in_progress", "completed", "failed", "cancelled"}),
    "in_progress": frozenset({"pending", "completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
SORTS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "priority": "priority_rank",
    "title": "title",
}
MAX_TITLE = 500
MAX_TEXT = 64 * 1024
MAX_SHORT = 256
MAX_LIST_LIMIT = 1000


@dataclass(slots=True)
class Task:
    id: str
    title: str
    description: str | None
    status: str
    priority: str
    environment_id: str | None
    agent_id: str | None
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int
    seq: int = 0


@dataclass(slots=True)
class TaskQuery:
    status: list[str] = field(default_factory=list)
    priority: list[str] = field(default_factory=list)
    environment_id: str | None = None
    agent_id: str | None = None
    tags: list[str] = field(default_factory=list)
    text: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    sort: str = "-created_at"


def task_from_row(row: dict[str, Any] | None) -> Task:
    assert row is not None
    return Task(
        id=str(row["id"]),
        title=row["title"],
        description=row["description"],
        status=row["status"],
        priority=row["priority"],
        environment_id=None if row["environment_id"] is None else str(row["environment_id"]),
        agent_id=row["agent_id"],
        tags=list(row["tags"]),
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        version=row["version"],
        seq=row["seq"],
    )
