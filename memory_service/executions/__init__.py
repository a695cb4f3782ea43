"""Agent executions: runs of an agent, their append-only steps, and travel through them.

An execution (optionally tied to a task, an environment and an agent) records
steps; each step stores the agent's state after it, as a keyframe (the full
JSON) every ``keyframe_interval`` steps and as an RFC 6902 patch against the
previous state in between, so storage grows with what changed and any state is
rebuilt from at most ``keyframe_interval - 1`` patches. Checkpoints name steps;
a rollback appends a step that restores an earlier state; a fork is a new
execution that shares its parent's steps up to its fork point by reference.

How other features build on it (everything goes through ``ExecutionService``,
held as ``Runtime.executions``; the tables belong to ``repository.py`` alone):

- a workflow engine creates one execution per workflow run and calls
  ``append_steps`` once per completed workflow step (``seq`` set, so a retried
  append after a lost reply is a 409 rather than a duplicate);
- a graph checkpointer (LangGraph) maps a thread to an execution and a
  checkpoint to a step: ``parent_seq`` records the checkpoint's parent, the
  checkpoint id and its metadata go in the step's ``metadata``, and
  ``state_at`` / ``get_step`` read it back; pending writes belong in that
  feature's own table keyed by (execution id, seq);
- a console reads ``list_steps`` (the timeline), ``diff``, ``list_checkpoints``,
  ``lineage`` and ``replay``, and calls ``fork`` and ``rollback``;
- a change feed or an export lists executions by ``list`` and walks their
  steps by ``list_steps`` / ``get_step(include_state=True)``.

Every appended step is also announced to the event log as ``execution.step``
(ids, kind, name, duration; never state content).
"""

from memory_service.executions.models import (
    Checkpoint,
    Diff,
    DiffSummary,
    Execution,
    ExecutionChanges,
    ExecutionQuery,
    Lineage,
    LineageLink,
    NewExecution,
    NewStep,
    ReplayStep,
    StateAt,
    Step,
    StepRef,
)
from memory_service.executions.service import ExecutionLimits, ExecutionService, StepEvents

__all__ = [
    "Checkpoint",
    "Diff",
    "DiffSummary",
    "Execution",
    "ExecutionChanges",
    "ExecutionLimits",
    "ExecutionQuery",
    "ExecutionService",
    "Lineage",
    "LineageLink",
    "NewExecution",
    "NewStep",
    "ReplayStep",
    "StateAt",
    "Step",
    "StepEvents",
    "StepRef",
]
