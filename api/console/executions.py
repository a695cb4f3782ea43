"""Executions: the list, and one execution's timeline, scrubber, diff, checkpoints, fork, rollback.

Everything is read through ``ExecutionService``: ``list_steps`` draws the
timeline, ``state_at`` and ``get_step`` fill the panel the scrubber moves over
(htmx swaps only that panel; without JavaScript the scrubber is a GET form), and
``diff`` gives the patch between two chosen steps, drawn as coloured
add/remove/replace lines. Rollback and fork are forms that post to the service
and land on the execution they produced.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from api.console.forms import form_fields, one
from api.console.rendering import is_htmx, page, see_other
from memory_service.errors import FieldError, InvalidInput
from memory_service.executions import ExecutionQuery, ExecutionService
from memory_service.executions.models import STATUSES

TIMELINE_PAGE = 200


def step_number(text: str | None, field: str, default: int) -> int:
    if text is None or text.strip() == "":
        return default
    if not text.strip().isdigit() or len(text.strip()) > 9:
        raise InvalidInput(f"{field} must be a step number", errors=[FieldError(field, "a seq")])
    return int(text)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


async def state_panel(
    executions: ExecutionService, tenant_id: uuid.UUID, execution_id: str, at: int
) -> dict[str, Any]:
    state = await executions.state_at(tenant_id, execution_id, at)
    step = None
    if state.seq > 0:
        step = await executions.get_step(tenant_id, execution_id, state.seq, include_patch=True)
    return {"at": state.seq, "state_json": pretty(state.state), "step": step, "pretty": pretty}


class ExecutionPagesController(Controller):
    path = "/executions"
    include_in_schema = False

    @get("/")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        query = ExecutionQuery(status=[status] if status else [])
        result = await executions.list_executions(tenant_id, query, limit=50, cursor=cursor)
        return page(
            request,
            "executions/list.html",
            active="executions",
            executions=result.items,
            next_cursor=result.next_cursor,
            status=status or "",
            statuses=STATUSES,
        )

    @get("/{execution_id:str}")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        at: FromQuery[str | None] = None,
        diff_from: FromQuery[str | None] = None,
        diff_to: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        execution = await executions.get(tenant_id, execution_id)
        head = execution.head_seq
        timeline = await executions.list_steps(
            tenant_id, execution_id, limit=TIMELINE_PAGE, cursor=cursor
        )
        panel = await state_panel(
            executions, tenant_id, execution_id, min(step_number(at, "at", head), head)
        )
        diff = None
        if diff_from is not None:
            diff = await executions.diff(
                tenant_id,
                execution_id,
                step_number(diff_from, "diff_from", 0),
                step_number(diff_to, "diff_to", head),
            )
        return page(
            request,
            "executions/detail.html",
            active="executions",
            execution=execution,
            steps=timeline.items,
            next_cursor=timeline.next_cursor,
            checkpoints=await executions.list_checkpoints(tenant_id, execution_id),
            lineage=await executions.lineage(tenant_id, execution_id),
            diff=diff,
            diff_from=diff_from or "0",
            diff_to=diff_to or str(head),
            **panel,
        )

    @get("/{execution_id:str}/state")
    async def state(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        at: FromQuery[str | None] = None,
    ) -> Response[Any]:
        if not is_htmx(request):
            return see_other(f"/console/executions/{execution_id}?at={at or ''}")
        execution = await executions.get(tenant_id, execution_id)
        seq = min(step_number(at, "at", execution.head_seq), execution.head_seq)
        panel = await state_panel(executions, tenant_id, execution_id, seq)
        return page(request, "executions/_state.html", execution=execution, **panel)

    @post("/{execution_id:str}/checkpoints")
    async def checkpoint(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        seq = step_number(one(form, "seq"), "seq", 0) if one(form, "seq") else None
        await executions.create_checkpoint(
            tenant_id, execution_id, one(form, "label"), seq, one(form, "note") or None
        )
        return see_other(f"/console/executions/{execution_id}")

    @post("/{execution_id:str}/rollback")
    async def rollback(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        step = await executions.rollback(tenant_id, execution_id, step_number(one(form, "to"), "to", 0))
        return see_other(f"/console/executions/{execution_id}?at={step.seq}")

    @post("/{execution_id:str}/fork")
    async def fork(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        forked = await executions.fork(tenant_id, execution_id, step_number(one(form, "at"), "at", 0))
        return see_other(f"/console/executions/{forked.id}")
