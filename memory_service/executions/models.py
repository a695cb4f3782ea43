"""Value types of executions: what callers pass in and what the service hands back.

Inputs (``NewExecution``, ``ExecutionChanges``, ``NewStep``, ``ExecutionQuery``) are
plain dataclasses a caller fills; ``ExecutionService`` validates them before it
writes anything. Outputs (``Execution``, ``Step``, ``Checkpoint``, ``StateAt``,
``Diff``, ``Lineage``) are what it returns. ``StepRef`` is how a caller names a
step: a seq, a checkpoint label, or a moment in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STATUSES = ("running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# The state an execution holds before its first step.
INITIAL_STATE: dict[str, Any] = {}

# A JSON value as json.loads returns it.
JSON = Any
# A step reference: a seq (int), a checkpoint label (str) or a moment (datetime).
StepRef = int | str | datetime


@dataclass(slots=True)
class NewExecution:
    task_id: str | None = None
    environment_id: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "running"


@dataclass(slots=True)
class ExecutionChanges:
    """What ``ExecutionService.update`` may change; ``None`` leaves a field as it is."""

    status: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(slots=True)
class Execution:
    id: str
    task_id: str | None
    environment_id: str | None
    agent_id: str | None
    metadata: dict[str, Any]
    status: str
    parent_id: str | None  # set on a fork: the execution it continues
    fork_seq: int | None  # the parent's step the fork continues from
    head_seq: int  # the last step, inherited steps included (0: no step yet)
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    version: int
    seq: int = 0  # internal listing key, never shown
    keyframe_seq: int = 0  # internal: the last step at or before head_seq with a full state


@dataclass(slots=True)
class ExecutionQuery:
    task_id: str | None = None
    agent_id: str | None = None
    environment_id: str | None = None
    status: list[str] = field(default_factory=list)
    parent_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


_UNSET: Any = object()


@dataclass(slots=True)
class NewStep:
    """One step to append. Give ``state`` (the full state after the step), or
    ``state_patch`` (RFC 6902 operations against the previous step's state), or
    neither (the state did not change). ``seq``, when given, must be the next seq:
    a writer that raced another gets a conflict instead of an interleaved history.
    Appending takes ``state`` over: the service may keep it as the new head's state and
    change it in place later, so a caller does not change it afterwards."""

    kind: str
    name: str | None = None
    input: JSON = None
    output: JSON = None
    error: JSON = None
    metadata: dict[str, Any] = field(default_factory=dict)
    state: JSON = _UNSET
    state_patch: list[Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    seq: int | None = None
    parent_seq: int | None = None

    @property
    def has_state(self) -> bool:
        return self.state is not _UNSET


@dataclass(slots=True)
class Step:
    execution_id: str  # the execution that holds the row (a parent, for inherited steps)
    seq: int
    kind: str
    name: str | None
    started_at: datetime
    ended_at: datetime
    recorded_at: datetime
    state_size: int
    changed_paths: int
    has_error: bool
    keyframe: bool
    parent_seq: int | None
    # details: filled by get_step and append_steps, not by the timeline
    input: JSON = None
    output: JSON = None
    error: JSON = None
    metadata: dict[str, Any] = field(default_factory=dict)
    state: JSON = None  # only when asked for
    state_patch: list[Any] | None = None  # only when asked for

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


@dataclass(slots=True)
class Checkpoint:
    execution_id: str  # where the label is defined (an ancestor, for inherited labels)
    label: str
    seq: int
    note: str | None
    created_at: datetime


@dataclass(slots=True)
class StateAt:
    execution_id: str
    seq: int  # 0: before the first step
    state: JSON


@dataclass(slots=True)
class DiffSummary:
    added: list[str]
    removed: list[str]
    changed: list[str]


@dataclass(slots=True)
class Diff:
    from_execution: str
    from_seq: int
    to_execution: str
    to_seq: int
    patch: list[dict[str, Any]]
    summary: DiffSummary


@dataclass(slots=True)
class LineageLink:
    id: str
    fork_seq: int | None
    created_at: datetime


@dataclass(slots=True)
class Lineage:
    execution_id: str
    ancestors: list[LineageLink]  # the root first, the direct parent last
    forks: list[LineageLink]  # direct forks of this execution, oldest first


@dataclass(slots=True)
class ReplayStep:
    """One replayed step: the step and its patch against the previous state."""

    step: Step
    state_patch: list[dict[str, Any]]
    wait_s: float  # the recorded gap before it, scaled by the replay speed
