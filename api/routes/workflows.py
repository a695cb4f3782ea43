"""Workflows over HTTP: definitions with versions, runs, and the commands on a run.

``PUT /v1/workflows/{name}`` stores a definition (201 for a new version, 200 when
it is unchanged); ``POST /v1/workflows/{name}/runs`` starts a run (200 with the
existing run for a repeated ``idempotency_key``); ``/v1/workflow-runs/{id}`` shows
a run with every step's status, attempts and output, and takes ``cancel``,
``retry``, ``fork`` and ``signals/{name}``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Struct

from api.schemas import Strict
from memory_service.workflows import Definition, Run, RunQuery, Step, WorkflowService

RunStatus = Literal["running", "completed", "failed", "cancelled"]


class VersionOut(Struct):
    version: int
    created_at: datetime


class DefinitionOut(Struct):
    name: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    versions: list[VersionOut] | None = None

    @classmethod
    def of(cls, d: Definition, versions: list[tuple[int, datetime]] | None = None) -> DefinitionOut:
        listed = None if versions is None else [VersionOut(v, at) for v, at in versions]
        return cls(d.name, d.version, d.definition, d.created_at, listed)


class DefinitionPage(Struct):
    items: list[DefinitionOut]
    next_cursor: str | None


class StepOut(Struct):
    id: str
    kind: str
    status: str
    attempts: int
    depends_on: list[str]
    input: Any
    output: Any
    error: str | None
    parent_step: str | None
    item_index: int | None
    reused: bool
    available_at: datetime | None
    updated_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, s: Step) -> StepOut:
        return cls(
            s.step_id,
            s.kind,
            s.status,
            s.attempts,
            s.depends_on,
            s.input,
            s.output,
            s.error,
            s.parent_step,
            s.item_index,
            s.reused,
            s.available_at,
            s.updated_at,
            s.completed_at,
        )


class Progress(Struct):
    completed: int
    total: int


class RunOut(Struct):
    id: str
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
    progress: Progress
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepOut] | None = None

    @classmethod
    def of(cls, r: Run, *, with_steps: bool = True) -> RunOut:
        return cls(
            r.id,
            r.workflow,
            r.version,
            r.status,
            r.input,
            r.output,
            r.error,
            r.idempotency_key,
            r.forked_from,
            r.fork_step,
            r.execution_id,
            Progress(r.steps_completed, r.steps_total),
            r.created_at,
            r.updated_at,
            r.finished_at,
            [StepOut.of(s) for s in r.steps] if with_steps else None,
        )


class RunPage(Struct):
    items: list[RunOut]
    next_cursor: str | None


class RunCreate(Strict):
    input: Any = None
    idempotency_key: str | None = None
    version: int | None = None


class ForkIn(Strict):
    from_step: str
    input_patch: dict[str, Any] | None = None


class SignalIn(Strict):
    payload: Any = None


class SignalOut(Struct):
    run_id: str
    name: str
    released_steps: int


Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
Cursor = Annotated[str | None, QueryParameter(max_length=512)]


class WorkflowController(Controller):
    path = "/workflows"
    tags = ["workflows"]

    @put(
        "/{name:str}",
        summary="Store a definition: a changed one becomes a new version",
        responses={201: ResponseSpec(data_container=DefinitionOut, description="A new version")},
    )
    async def put_workflow(
        self,
        name: FromPath[str],
        data: JSONBody[dict[str, Any]],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[DefinitionOut]:
        definition, created = await workflows.put_definition(tenant_id, name, data)
        _, versions = await workflows.get_definition(tenant_id, name)
        return Response(DefinitionOut.of(definition, versions), status_code=201 if created else 200)

    @get("/", summary="List workflows (the latest version of each), by name")
    async def list_workflows(
        self,
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> DefinitionPage:
        page = await workflows.list_definitions(tenant_id, limit=limit, cursor=cursor)
        return DefinitionPage([DefinitionOut.of(d) for d in page.items], page.next_cursor)

    @get("/{name:str}", summary="A workflow's latest definition and its versions")
    async def get_workflow(
        self,
        name: FromPath[str],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> DefinitionOut:
        definition, versions = await workflows.get_definition(tenant_id, name)
        return DefinitionOut.of(definition, versions)

    @get("/{name:str}/versions/{version:int}", summary="One version of a workflow")
    async def get_workflow_version(
        self,
        name: FromPath[str],
        version: FromPath[int],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> DefinitionOut:
        definition, versions = await workflows.get_definition(tenant_id, name, version)
        return DefinitionOut.of(definition, versions)

    @post(
        "/{name:str}/runs",
        summary="Start a run; the same idempotency_key answers the same run",
        status_code=201,
        responses={
            200: ResponseSpec(
                data_container=RunOut,
                description="A run with this idempotency_key already exists: that run",
            )
        },
    )
    async def start_run(
        self,
        name: FromPath[str],
        data: JSONBody[RunCreate],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[RunOut]:
        run, created = await workflows.start_run(
            tenant_id,
            name,
            {} if data.input is None else data.input,
            data.idempotency_key,
            data.version,
        )
        if not created:
            run = await workflows.get_run(tenant_id, run.id)
        return Response(RunOut.of(run), status_code=201 if created else 200)


class WorkflowRunController(Controller):
    path = "/workflow-runs"
    tags = ["workflows"]

    @get("/", summary="List runs, newest first, by workflow and status")
    async def list_runs(
        self,
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
        workflow: Annotated[str | None, QueryParameter(max_length=128)] = None,
        status: Annotated[RunStatus | None, QueryParameter()] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> RunPage:
        page = await workflows.list_runs(
            tenant_id, RunQuery(workflow=workflow, status=status), limit=limit, cursor=cursor
        )
        return RunPage([RunOut.of(r, with_steps=False) for r in page.items], page.next_cursor)

    @get("/{run_id:str}", summary="A run with each step's status, attempts and output")
    async def get_run(
        self,
        run_id: FromPath[str],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RunOut:
        return RunOut.of(await workflows.get_run(tenant_id, run_id))

    @post("/{run_id:str}/cancel", status_code=200, summary="Cancel a running run")
    async def cancel_run(
        self,
        run_id: FromPath[str],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RunOut:
        return RunOut.of(await workflows.cancel(tenant_id, run_id))

    @post("/{run_id:str}/retry", status_code=200, summary="Resume a failed run at its failed steps")
    async def retry_run(
        self,
        run_id: FromPath[str],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RunOut:
        return RunOut.of(await workflows.retry(tenant_id, run_id))

    @post(
        "/{run_id:str}/fork",
        status_code=201,
        summary="Run again from a step, reusing outputs before it",
    )
    async def fork_run(
        self,
        run_id: FromPath[str],
        data: JSONBody[ForkIn],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RunOut:
        return RunOut.of(await workflows.fork(tenant_id, run_id, data.from_step, data.input_patch))

    @post("/{run_id:str}/signals/{name:str}", status_code=202, summary="Send a signal to a run")
    async def signal_run(
        self,
        run_id: FromPath[str],
        name: FromPath[str],
        workflows: NamedDependency[WorkflowService],
        tenant_id: NamedDependency[uuid.UUID],
        data: JSONBody[SignalIn | None] = None,
    ) -> SignalOut:
        payload = None if data is None else data.payload
        released = await workflows.signal(tenant_id, run_id, name, payload)
        return SignalOut(run_id, name, released)
