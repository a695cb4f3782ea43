"""Request and response bodies of the execution endpoints (msgspec structs).

Bodies are decoded strictly (an unknown field is a 400 naming it); the rules
that need the database or the settings are the service's. ``UNSET`` fields are
left out of responses, so a step carries ``state`` only when it was asked for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from api.schemas import Strict
from memory_service.errors import FieldError, InvalidInput
from memory_service.executions import (
    Checkpoint,
    Diff,
    Execution,
    Lineage,
    LineageLink,
    NewExecution,
    NewStep,
    Step,
)

Status = Literal["running", "succeeded", "failed", "cancelled"]
Short = Annotated[str, Meta(min_length=1, max_length=256)]
Seq = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Ref = Annotated[int, Meta(ge=0, le=2**31 - 1)] | Annotated[str, Meta(min_length=1, max_length=128)]


class ExecutionCreate(Strict):
    task_id: str | None = None
    environment_id: str | None = None
    agent_id: Short | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    status: Status = "running"

    def to_domain(self) -> NewExecution:
        return NewExecution(self.task_id, self.environment_id, self.agent_id, self.metadata, self.status)


class ExecutionUpdate(Strict):
    status: Status | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class ExecutionOut(Struct):
    id: str
    task_id: str | None
    environment_id: str | None
    agent_id: str | None
    metadata: dict[str, Any]
    status: str
    parent_id: str | None
    fork_seq: int | None
    head_seq: int
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    version: int

    @classmethod
    def of(cls, e: Execution) -> ExecutionOut:
        return cls(
            e.id, e.task_id, e.environment_id, e.agent_id, e.metadata, e.status, e.parent_id,
            e.fork_seq, e.head_seq, e.created_at, e.updated_at, e.ended_at, e.version,
        )


class ExecutionPage(Struct):
    items: list[ExecutionOut]
    next_cursor: str | None


class _StepFields(Strict):
    name: Annotated[str, Meta(max_length=256)] | None = None
    input: Any = None
    output: Any = None
    error: Any = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    state: Any | UnsetType = UNSET
    state_patch: list[dict[str, Any]] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    seq: Seq | None = None
    parent_seq: Seq | None = None

    def _domain(self, kind: str) -> NewStep:
        step = NewStep(
            kind=kind, name=self.name, input=self.input, output=self.output,
            error=self.error, metadata=self.metadata, state_patch=self.state_patch,
            started_at=self.started_at, ended_at=self.ended_at, seq=self.seq,
            parent_seq=self.parent_seq,
        )
        if self.state is not UNSET:
            step.state = self.state
        return step


class StepIn(_StepFields, kw_only=True):
    """One step. ``state`` is the full state after it; ``state_patch`` RFC 6902
    operations against the previous state; neither: the state did not change."""

    kind: Annotated[str, Meta(min_length=1, max_length=64)]

    def to_domain(self) -> NewStep:
        return self._domain(self.kind)


class StepsIn(_StepFields, kw_only=True):
    """One step (its fields at the top level) or a batch (``steps``), not both."""

    kind: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    steps: list[StepIn] | UnsetType = UNSET


def steps_of(body: StepsIn | list[StepIn]) -> list[NewStep]:
    """A bare array, a ``{"steps": [...]}`` batch, or one step object."""
    if isinstance(body, list):
        return [s.to_domain() for s in body]
    if body.steps is not UNSET:
        if body.kind is not UNSET:
            raise InvalidInput(
                "give one step or a steps batch, not both",
                errors=[FieldError("steps", "not together with a step's own fields")],
            )
        return [s.to_domain() for s in body.steps]
    if body.kind is UNSET:
        raise InvalidInput("a step needs a kind", errors=[FieldError("kind", "required")])
    return [body._domain(body.kind)]


class StepOut(Struct):
    execution_id: str
    seq: int
    kind: str
    name: str | None
    started_at: datetime
    ended_at: datetime
    duration_ms: float
    has_error: bool
    state_size: int
    changed_paths: int
    keyframe: bool
    parent_seq: int | None
    recorded_at: datetime

    @classmethod
    def of(cls, s: Step) -> StepOut:
        return cls(
            s.execution_id, s.seq, s.kind, s.name, s.started_at, s.ended_at,
            round(s.duration_ms, 3), s.has_error, s.state_size, s.changed_paths, s.keyframe,
            s.parent_seq, s.recorded_at,
        )


class StepDetail(StepOut):
    input: Any = None
    output: Any = None
    error: Any = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    state: Any | UnsetType = UNSET
    state_patch: list[dict[str, Any]] | UnsetType = UNSET

    @classmethod
    def detail(cls, s: Step, *, state: bool = False, patch: bool = False) -> StepDetail:
        base = StepOut.of(s)
        fields: dict[str, Any] = {f: getattr(base, f) for f in StepOut.__struct_fields__}
        return cls(
            **fields,
            input=s.input,
            output=s.output,
            error=s.error,
            metadata=s.metadata,
            state=s.state if state else UNSET,
            state_patch=s.state_patch if patch and s.state_patch is not None else UNSET,
        )


class StepsAppended(Struct):
    items: list[StepOut]
    head_seq: int


class StepPage(Struct):
    items: list[StepOut]
    next_cursor: str | None


class StateOut(Struct):
    execution_id: str
    seq: int
    state: Any


class DiffEnd(Struct):
    execution_id: str
    seq: int


class DiffSummaryOut(Struct):
    added: list[str]
    removed: list[str]
    changed: list[str]


class DiffOut(Struct, rename={"from_": "from"}):
    from_: DiffEnd
    to: DiffEnd
    patch: list[dict[str, Any]]
    summary: DiffSummaryOut

    @classmethod
    def of(cls, d: Diff) -> DiffOut:
        s = d.summary
        return cls(
            DiffEnd(d.from_execution, d.from_seq), DiffEnd(d.to_execution, d.to_seq), d.patch,
            DiffSummaryOut(s.added, s.removed, s.changed),
        )


class CheckpointIn(Strict):
    label: Annotated[str, Meta(min_length=1, max_length=128)]
    seq: Seq | None = None
    note: Annotated[str, Meta(max_length=4096)] | None = None


class CheckpointOut(Struct):
    execution_id: str
    label: str
    seq: int
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, c: Checkpoint) -> CheckpointOut:
        return cls(c.execution_id, c.label, c.seq, c.note, c.created_at)


class CheckpointList(Struct):
    items: list[CheckpointOut]


class RollbackIn(Strict):
    to: Ref


class ForkIn(Strict):
    at: Ref
    state_patch: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


class LinkOut(Struct):
    id: str
    fork_seq: int | None
    created_at: datetime

    @classmethod
    def of(cls, link: LineageLink) -> LinkOut:
        return cls(link.id, link.fork_seq, link.created_at)


class LineageOut(Struct):
    execution_id: str
    ancestors: list[LinkOut]
    forks: list[LinkOut]

    @classmethod
    def of(cls, lineage: Lineage) -> LineageOut:
        return cls(
            lineage.execution_id,
            [LinkOut.of(a) for a in lineage.ancestors],
            [LinkOut.of(f) for f in lineage.forks],
        )
