"""Tasks: create, get, patch, reopen, delete, and list with filters, sorts and cursors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from api.routes.memories import parse_if_match
from api.schemas import Strict
from memory_service.records.task_models import Task, TaskQuery
from memory_service.records.tasks import TaskService

Status = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
Priority = Literal["low", "medium", "high", "urgent"]
Short = Annotated[str, Meta(min_length=1, max_length=256)]
Tag = Annotated[str, Meta(min_length=1, max_length=64)]
SortKey = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "priority",
    "-priority",
    "title",
    "-title",
]


class TaskCreate(Strict):
    title: str
    description: str | None = None
    status: Status = "pending"
    priority: Priority = "medium"
    environment_id: str | None = None
    agent_id: Short | None = None
    tags: list[Tag] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__}


class TaskUpdate(Strict):
    title: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    status: Status | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    environment_id: str | UnsetType | None = UNSET
    agent_id: Short | UnsetType | None = UNSET
    tags: list[Tag] | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET

    def fields(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


class TaskOut(Struct):
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

    @classmethod
    def of(cls, t: Task) -> TaskOut:
        return cls(
            t.id,
            t.title,
            t.description,
            t.status,
            t.priority,
            t.environment_id,
            t.agent_id,
            t.tags,
            t.metadata,
            t.created_at,
            t.updated_at,
            t.completed_at,
            t.version,
        )


class TaskPage(Struct):
    items: list[TaskOut]
    next_cursor: str | None


IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)]


def _with_etag(task: Task, status_code: int = 200) -> Response[TaskOut]:
    return Response(
        TaskOut.of(task), status_code=status_code, headers={"ETag": f'"{task.version}"'}
    )


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]

    @post("/", summary="Create a task")
    async def create_task(
        self,
        data: JSONBody[TaskCreate],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[TaskOut]:
        return _with_etag(await tasks.create(tenant_id, data.fields()), 201)

    @get("/", summary="List tasks with filters, a sort and a cursor")
    async def list_tasks(
        self,
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
        status: Annotated[list[Status] | None, QueryParameter(description="repeatable")] = None,
        priority: Annotated[list[Priority] | None, QueryParameter(description="repeatable")] = None,
        environment_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        agent_id: Annotated[str | None, QueryParameter(max_length=256)] = None,
        tag: Annotated[list[str] | None, QueryParameter(description="all must match")] = None,
        q: Annotated[
            str | None, QueryParameter(description="text in title or description", max_length=256)
        ] = None,
        created_after: Annotated[datetime | None, QueryParameter()] = None,
        created_before: Annotated[datetime | None, QueryParameter()] = None,
        sort: Annotated[
            SortKey, QueryParameter(description="- prefix: descending")
        ] = "-created_at",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> TaskPage:
        query = TaskQuery(
            status=list(status or []),
            priority=list(priority or []),
            environment_id=environment_id,
            agent_id=agent_id,
            tags=list(tag or []),
            text=q,
            created_after=created_after,
            created_before=created_before,
            sort=sort,
        )
        page = await tasks.list(tenant_id, query, limit=limit, cursor=cursor)
        return TaskPage([TaskOut.of(t) for t in page.items], page.next_cursor)

    @get("/{task_id:str}", summary="Get a task")
    async def get_task(
        self,
        task_id: FromPath[str],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[TaskOut]:
        return _with_etag(await tasks.get(tenant_id, task_id))

    @patch("/{task_id:str}", summary="Update a task; invalid status transitions are 409")
    async def update_task(
        self,
        task_id: FromPath[str],
        data: JSONBody[TaskUpdate],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: IfMatch = None,
    ) -> Response[TaskOut]:
        task = await tasks.update(tenant_id, task_id, data.fields(), parse_if_match(if_match))
        return _with_etag(task)

    @post(
        "/{task_id:str}/reopen",
        status_code=200,
        summary="Move a completed, failed or cancelled task back to pending",
    )
    async def reopen_task(
        self,
        task_id: FromPath[str],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: IfMatch = None,
    ) -> Response[TaskOut]:
        return _with_etag(await tasks.reopen(tenant_id, task_id, parse_if_match(if_match)))

    @delete("/{task_id:str}", status_code=204, summary="Delete a task")
    async def delete_task(
        self,
        task_id: FromPath[str],
        tasks: NamedDependency[TaskService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: IfMatch = None,
    ) -> None:
        await tasks.delete(tenant_id, task_id, parse_if_match(if_match))
