"""The task board: one column per status, filters and sorts, cursor-paged columns, moves.

A column shows one page of the task listing; its last item asks for the next
page when it scrolls into view (htmx), or is a plain link without JavaScript.
A move posts the new status with the version the card showed: the browser moves
the card at once and moves it back if the service answers 409 (the status
machine forbids it) or 412 (the task changed meanwhile).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from api.console.forms import form_fields, one, optional, version
from api.console.rendering import error_page, is_htmx, page, see_other, status_of
from memory_service.errors import Conflict, MemoryServiceError, PreconditionFailed
from memory_service.records.environments import EnvironmentService
from memory_service.records.task_models import FINISHED, PRIORITIES, STATUSES, Task, TaskQuery
from memory_service.records.tasks import TaskService

PAGE_SIZE = 20
STATUS_LABELS = {
    "pending": "Pending",
    "in_progress": "In progress",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
SORTS = [
    ("-created_at", "Newest first"),
    ("created_at", "Oldest first"),
    ("-updated_at", "Recently updated"),
    ("-priority", "Most urgent"),
    ("priority", "Least urgent"),
    ("title", "Title A-Z"),
    ("-title", "Title Z-A"),
]


@dataclass(slots=True)
class BoardFilters:
    priority: str | None = None
    agent_id: str | None = None
    tag: str | None = None
    q: str | None = None
    environment_id: str | None = None
    sort: str = "-created_at"

    def query(self, status: str) -> TaskQuery:
        return TaskQuery(
            status=[status],
            priority=[self.priority] if self.priority else [],
            agent_id=self.agent_id,
            tags=[self.tag] if self.tag else [],
            text=self.q,
            environment_id=self.environment_id,
            sort=self.sort,
        )

    def params(self) -> dict[str, str]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name))}


def _filters(
    priority: str | None,
    agent_id: str | None,
    tag: str | None,
    q: str | None,
    environment_id: str | None,
    sort: str | None,
) -> BoardFilters:
    def clean(v: str | None) -> str | None:
        return v.strip() or None if v else None

    return BoardFilters(
        clean(priority), clean(agent_id), clean(tag), clean(q), clean(environment_id),
        clean(sort) or "-created_at",
    )


def more_url(status: str, filters: BoardFilters, cursor: str) -> str:
    return "/console/tasks/column?" + urlencode({**filters.params(), "status": status, "cursor": cursor})


def card_context(task: Task) -> dict[str, Any]:
    # every other status is offered; the service's status machine answers a forbidden
    # move with 409, which the board shows by moving the card back
    targets = [s for s in STATUSES if s != task.status]
    return {"task": task, "targets": targets, "labels": STATUS_LABELS}


class TaskBoardController(Controller):
    path = "/tasks"
    include_in_schema = False

    @get("/")
    async def board(
        self,
        request: Request[Any, Any, Any],
        tasks: NamedDependency[TaskService],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
        priority: FromQuery[str | None] = None,
        agent_id: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        environment_id: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
    ) -> Template:
        filters = _filters(priority, agent_id, tag, q, environment_id, sort)
        columns = []
        for status in STATUSES:
            result = await tasks.list(tenant_id, filters.query(status), limit=PAGE_SIZE)
            columns.append(
                {
                    "status": status,
                    "label": STATUS_LABELS[status],
                    "cards": [card_context(t) for t in result.items],
                    "more": more_url(status, filters, result.next_cursor)
                    if result.next_cursor
                    else None,
                }
            )
        envs = await environments.list(tenant_id, limit=200)
        return page(
            request,
            "tasks/board.html",
            active="tasks",
            columns=columns,
            filters=filters,
            priorities=PRIORITIES,
            sorts=SORTS,
            environments=envs.items,
        )

    @get("/column")
    async def column(
        self,
        request: Request[Any, Any, Any],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
        status: FromQuery[str],
        cursor: FromQuery[str | None] = None,
        priority: FromQuery[str | None] = None,
        agent_id: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        environment_id: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
    ) -> Template:
        filters = _filters(priority, agent_id, tag, q, environment_id, sort)
        result = await tasks.list(tenant_id, filters.query(status), limit=PAGE_SIZE, cursor=cursor)
        context: dict[str, Any] = {
            "cards": [card_context(t) for t in result.items],
            "more": more_url(status, filters, result.next_cursor) if result.next_cursor else None,
            "status": status,
            "label": STATUS_LABELS.get(status, status),
        }
        if is_htmx(request):
            return page(request, "tasks/_cards.html", **context)
        return page(request, "tasks/column.html", active="tasks", **context)

    @post("/")
    async def create(
        self,
        request: Request[Any, Any, Any],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        await tasks.create(
            tenant_id,
            {
                "title": one(form, "title"),
                "priority": one(form, "priority") or "medium",
                "description": optional(form, "description"),
            },
        )
        return see_other("/console/tasks")

    @post("/{task_id:str}/status")
    async def move(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        target, seen = one(form, "status"), one(form, "from")
        try:
            if seen in FINISHED and target == "pending":
                task = await tasks.reopen(tenant_id, task_id, version(form))
            else:
                task = await tasks.update(tenant_id, task_id, {"status": target}, version(form))
        except (Conflict, PreconditionFailed) as exc:
            # the card comes back as the task is now, with a sentence a person reads
            current = await tasks.get(tenant_id, task_id)
            notice = refused_move(exc, current, target)
            if is_htmx(request):
                context = card_context(current) | {"notice": notice}
                return page(request, "tasks/_card.html", status_code=status_of(exc), **context)
            return error_page(request, status_of(exc), notice)
        except MemoryServiceError as exc:
            return error_page(request, status_of(exc), exc.detail)
        if is_htmx(request):
            return page(request, "tasks/_card.html", **card_context(task))
        return see_other("/console/tasks")


def refused_move(exc: MemoryServiceError, current: Task, target: str) -> str:
    """Why a move did not happen, in the board's words (no ids, no API phrasing)."""
    if isinstance(exc, PreconditionFailed):
        return (
            f"Not moved: this task was changed meanwhile (now version {current.version}, "
            f"{STATUS_LABELS[current.status].lower()}). The card shows it as it is now."
        )
    if current.status == target:
        return f"Not moved: it is already {STATUS_LABELS[target].lower()}."
    return (
        f"Not moved: a {STATUS_LABELS[current.status].lower()} task cannot go to "
        f"{STATUS_LABELS.get(target, target).lower()}."
    )
