"""Executions: create, list, get, update (If-Match), append steps, timeline, step, state.

Thin handlers over ``ExecutionService``; the time-travel endpoints (diff,
checkpoints, rollback, fork, lineage, replay) are in ``execution_travel.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from msgspec import UNSET

from api.dependencies import runtime_of, tenant_of
from api.routes.execution_schemas import (
    ExecutionCreate,
    ExecutionOut,
    ExecutionPage,
    ExecutionUpdate,
    StateOut,
    Status,
    StepDetail,
    StepIn,
    StepOut,
    StepPage,
    StepsAppended,
    StepsIn,
    steps_of,
)
from api.routes.memories import parse_if_match
from memory_service.errors import FieldError, InvalidInput
from memory_service.executions import (
    Execution,
    ExecutionChanges,
    ExecutionQuery,
    ExecutionService,
)
from memory_service.executions.validation import parse_ref

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)]
IdParam = Annotated[str | None, QueryParameter(max_length=64)]
INCLUDES = ("state", "patch")


def _with_etag(execution: Execution, status_code: int = 200) -> Response[ExecutionOut]:
    return Response(
        ExecutionOut.of(execution),
        status_code=status_code,
        headers={"ETag": f'"{execution.version}"'},
    )


def parse_include(raw: str | None) -> set[str]:
    wanted = {part.strip() for part in (raw or "").split(",") if part.strip()}
    unknown = wanted - set(INCLUDES)
    if unknown:
        raise InvalidInput(
            f"include takes {', '.join(INCLUDES)}, not {', '.join(sorted(unknown))}",
            errors=[FieldError("include", "state and/or patch")],
        )
    return wanted


class ExecutionController(Controller):
    path = "/executions"
    tags = ["executions"]

    @post("/", summary="Start recording an execution")
    async def create_execution(
        self,
        data: JSONBody[ExecutionCreate],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[ExecutionOut]:
        return _with_etag(await executions.create(tenant_id, data.to_domain()), 201)

    @get("/", summary="List executions, newest first, with filters and a cursor")
    async def list_executions(
        self,
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        task_id: IdParam = None,
        agent_id: Annotated[str | None, QueryParameter(max_length=256)] = None,
        environment_id: IdParam = None,
        parent_id: IdParam = None,
        status: Annotated[list[Status] | None, QueryParameter(description="repeatable")] = None,
        created_after: Annotated[datetime | None, QueryParameter()] = None,
        created_before: Annotated[datetime | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> ExecutionPage:
        query = ExecutionQuery(
            task_id=task_id,
            agent_id=agent_id,
            environment_id=environment_id,
            status=list(status or []),
            parent_id=parent_id,
            created_after=created_after,
            created_before=created_before,
        )
        page = await executions.list_executions(tenant_id, query, limit=limit, cursor=cursor)
        return ExecutionPage([ExecutionOut.of(e) for e in page.items], page.next_cursor)

    @get("/{execution_id:str}", summary="Get an execution")
    async def get_execution(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[ExecutionOut]:
        return _with_etag(await executions.get(tenant_id, execution_id))

    @patch("/{execution_id:str}", summary="Change an execution's status or metadata (If-Match)")
    async def update_execution(
        self,
        execution_id: FromPath[str],
        data: JSONBody[ExecutionUpdate],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: IfMatch = None,
    ) -> Response[ExecutionOut]:
        changes = ExecutionChanges(
            status=None if data.status is UNSET else data.status,
            metadata=None if data.metadata is UNSET else data.metadata,
        )
        updated = await executions.update(tenant_id, execution_id, changes, parse_if_match(if_match))
        return _with_etag(updated)

    @post(
        "/{execution_id:str}/steps",
        status_code=201,
        summary="Append one step or a batch of up to 1,000, all or nothing",
    )
    async def append_steps(
        self,
        execution_id: FromPath[str],
        data: JSONBody[StepsIn | list[StepIn]],
        request: Request[Any, Any, Any],
    ) -> StepsAppended:
        # an agent appends on every step: the hot path reads its service and tenant off
        # the request (see api/dependencies.py)
        executions, tenant_id = runtime_of(request).executions, tenant_of(request)
        appended = await executions.append_steps(tenant_id, execution_id, steps_of(data))
        return StepsAppended([StepOut.of(s) for s in appended], appended[-1].seq)

    @get("/{execution_id:str}/steps", summary="The timeline: steps in seq order, with a cursor")
    async def list_steps(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        after_seq: Annotated[int, QueryParameter(ge=0, le=2**31 - 1)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> StepPage:
        page = await executions.list_steps(
            tenant_id, execution_id, limit=limit, cursor=cursor, after_seq=after_seq
        )
        return StepPage([StepOut.of(s) for s in page.items], page.next_cursor)

    @get("/{execution_id:str}/steps/{seq:int}", summary="One step; ?include=state,patch")
    async def get_step(
        self,
        execution_id: FromPath[str],
        seq: FromPath[int],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        include: Annotated[
            str | None, QueryParameter(description="state, patch or both", max_length=32)
        ] = None,
    ) -> StepDetail:
        wanted = parse_include(include)
        step = await executions.get_step(
            tenant_id,
            execution_id,
            seq,
            include_state="state" in wanted,
            include_patch="patch" in wanted,
        )
        return StepDetail.detail(step, state="state" in wanted, patch="patch" in wanted)

    @get(
        "/{execution_id:str}/state",
        summary="The state after a step: ?at= a seq, a checkpoint label or an RFC 3339 time",
    )
    async def get_state(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        at: Annotated[str | None, QueryParameter(max_length=128)] = None,
    ) -> StateOut:
        ref = None if at is None else parse_ref(at, "at")
        found = await executions.state_at(tenant_id, execution_id, ref)
        return StateOut(found.execution_id, found.seq, found.state)
