"""Time travel over HTTP: diff, checkpoints, rollback, fork, lineage and replay.

``GET /v1/executions/{id}/replay`` is a Server-Sent Events stream: first an
``event: state`` with the state before the first step it sends, then one
``event: step`` per step (``id:`` its seq; data: the step and its
``state_patch``), paced by the recorded gaps times ``speed`` (0: as fast as the
client reads), then ``event: end``. Reconnecting with ``Last-Event-ID`` (or
``?last_event_id=``) resumes after that step.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.routes.execution_schemas import (
    CheckpointIn,
    CheckpointList,
    CheckpointOut,
    DiffOut,
    ExecutionOut,
    ForkIn,
    LineageOut,
    RollbackIn,
    StepDetail,
    StepOut,
)
from memory_service.errors import FieldError, InvalidInput
from memory_service.executions import ExecutionService, ReplayStep, StateAt
from memory_service.executions.validation import parse_ref

RefParam = Annotated[
    str | None, QueryParameter(description="a seq, a checkpoint label or an RFC 3339 time", max_length=128)
]


def parse_last_event_id(raw: str | None, field: str = "Last-Event-ID") -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(
            f"{field} must be the seq of a step this replay sent",
            errors=[FieldError(field, "a step seq")],
        )
    return int(text)


class ExecutionTravelController(Controller):
    path = "/executions"
    tags = ["executions"]

    @get(
        "/{execution_id:str}/diff",
        summary="RFC 6902 patch and path summary between two steps (also fork vs parent)",
    )
    async def diff_states(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        from_: Annotated[str | None, QueryParameter(name="from", max_length=128)] = None,
        to: RefParam = None,
        from_execution: Annotated[
            str | None,
            QueryParameter(description="execution that `from` refers to (default: this one)", max_length=64),
        ] = None,
    ) -> DiffOut:
        if from_ is None:
            raise InvalidInput("from is required", errors=[FieldError("from", "required")])
        result = await executions.diff(
            tenant_id,
            execution_id,
            parse_ref(from_, "from"),
            None if to is None else parse_ref(to, "to"),
            from_execution=from_execution,
        )
        return DiffOut.of(result)

    @post("/{execution_id:str}/checkpoints", status_code=201, summary="Name a step (default: the head)")
    async def create_checkpoint(
        self,
        execution_id: FromPath[str],
        data: JSONBody[CheckpointIn],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> CheckpointOut:
        mark = await executions.create_checkpoint(
            tenant_id, execution_id, data.label, data.seq, data.note
        )
        return CheckpointOut.of(mark)

    @get("/{execution_id:str}/checkpoints", summary="Checkpoints, inherited ones of a fork included")
    async def list_checkpoints(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> CheckpointList:
        marks = await executions.list_checkpoints(tenant_id, execution_id)
        return CheckpointList([CheckpointOut.of(m) for m in marks])

    @delete("/{execution_id:str}/checkpoints/{label:str}", status_code=204, summary="Delete a checkpoint")
    async def delete_checkpoint(
        self,
        execution_id: FromPath[str],
        label: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> None:
        await executions.delete_checkpoint(tenant_id, execution_id, label)

    @post(
        "/{execution_id:str}/rollback",
        status_code=201,
        summary="Append a rollback step whose state equals an earlier step's",
    )
    async def rollback(
        self,
        execution_id: FromPath[str],
        data: JSONBody[RollbackIn],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> StepOut:
        step = await executions.rollback(tenant_id, execution_id, parse_ref(data.to, "to"))
        return StepOut.of(step)

    @post(
        "/{execution_id:str}/fork",
        status_code=201,
        summary="A new execution sharing this one's history up to a step, by reference",
    )
    async def fork(
        self,
        execution_id: FromPath[str],
        data: JSONBody[ForkIn],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> ExecutionOut:
        forked = await executions.fork(
            tenant_id,
            execution_id,
            parse_ref(data.at, "at"),
            state_patch=data.state_patch,
            metadata=data.metadata,
        )
        return ExecutionOut.of(forked)

    @get("/{execution_id:str}/lineage", summary="Ancestors (root first) and direct forks")
    async def lineage(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> LineageOut:
        return LineageOut.of(await executions.lineage(tenant_id, execution_id))

    @get(
        "/{execution_id:str}/replay",
        summary="Replay steps as Server-Sent Events, paced by recorded gaps x speed",
    )
    async def replay(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        tenant_id: NamedDependency[uuid.UUID],
        from_: Annotated[str | None, QueryParameter(name="from", max_length=128)] = None,
        to: RefParam = None,
        speed: Annotated[float, QueryParameter(ge=0, le=1000, description="0: no waiting")] = 1.0,
        last_event_id_header: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=32)
        ] = None,
        last_event_id: Annotated[str | None, QueryParameter(max_length=32)] = None,
    ) -> ServerSentEvent:
        # an empty Last-Event-ID is malformed, not absent; both are checked, the header wins
        header = parse_last_event_id(last_event_id_header)
        in_query = parse_last_event_id(last_event_id, "last_event_id")
        after = header if header is not None else in_query
        stream = executions.replay(
            tenant_id,
            execution_id,
            from_ref=None if from_ is None else parse_ref(from_, "from"),
            to_ref=None if to is None else parse_ref(to, "to"),
            speed=speed,
            after_seq=after,
        )
        # the first item is read here, so a bad execution or reference is a problem
        # document with its status, not an error inside an open stream
        first = await anext(stream)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            yield _message(first)
            async for item in stream:
                yield _message(item)
            yield ServerSentEventMessage(event="end", data="{}")

        return ServerSentEvent(
            messages(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )


def _message(item: StateAt | ReplayStep | None) -> ServerSentEventMessage:
    if item is None:
        return ServerSentEventMessage(data=None, comment="heartbeat")
    if isinstance(item, StateAt):
        body: Any = {"execution_id": item.execution_id, "seq": item.seq, "state": item.state}
        return ServerSentEventMessage(event="state", data=msgspec.json.encode(body).decode())
    detail = StepDetail.detail(item.step)
    payload = {**msgspec.to_builtins(detail), "state_patch": item.state_patch, "wait_ms": round(item.wait_s * 1000, 3)}
    return ServerSentEventMessage(event="step", id=item.step.seq, data=msgspec.json.encode(payload).decode())
