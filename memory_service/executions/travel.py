"""Time travel on ``ExecutionService``: rollback, fork and replay.

A mixin like ``reads.py``. History is never rewritten: a rollback appends a
``rollback`` step whose state equals the target's; a fork is a new execution
that names its parent and fork point and holds no copy of the parent's steps
(``lineage_segments`` resolves them), optionally starting with a ``fork`` step
that patches the inherited state. A replay walks the recorded steps in pages
(no connection is held while it waits), sending each step with its patch
against the previous state, paced by the recorded gaps between steps' end
times multiplied by ``speed`` (0: no waiting).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from memory_service.errors import Conflict, FieldError, InvalidInput, NotFound
from memory_service.executions import repository as repo
from memory_service.executions import states
from memory_service.executions import steps_repository as step_rows
from memory_service.executions import validation as check
from memory_service.executions.history import HeadState
from memory_service.executions.models import (
    Execution,
    NewStep,
    ReplayStep,
    StateAt,
    Step,
    StepRef,
)
from memory_service.executions.reads import ExecutionReads
from memory_service.executions.repository import Conn
from memory_service.infra.db import wrap_db_errors
from memory_service.records.tenants import parse_uuid

REPLAY_PAGE = 200
MAX_SPEED = 1000.0


class ExecutionTravel(ExecutionReads):
    async def append_steps(
        self, tenant_id: uuid.UUID, execution_id: str, steps: Sequence[NewStep]
    ) -> list[Step]:
        raise NotImplementedError

    async def _append(
        self,
        conn: Conn,
        tid: uuid.UUID,
        execution: Execution,
        steps: Sequence[NewStep],
        recorded: datetime,
    ) -> tuple[list[Step], HeadState] | None:
        raise NotImplementedError

    async def _after_append(
        self, tenant_id: uuid.UUID, execution: Execution, appended: list[Step], last_state: HeadState
    ) -> None:
        raise NotImplementedError

    async def rollback(self, tenant_id: uuid.UUID, execution_id: str, to: StepRef) -> Step:
        """Append a ``rollback`` step whose state is the state after step ``to``."""
        tid = tenant_id
        eid = parse_uuid(execution_id, "execution_id")
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn, conn.transaction():
            locked = await repo.lock_execution(conn, tid, eid)
            if locked is None:
                raise NotFound(f"execution {execution_id} not found")
            execution, now = locked
            segments = await self.history.segments(conn, tid, execution)
            seq = await self.resolve(conn, tid, execution, segments, to, "to", InvalidInput)
            target = await self.history.state_at(conn, segments, seq)
            step = NewStep(
                kind="rollback",
                name=f"rollback to {seq}",
                input={"to": seq, **({"label": to} if isinstance(to, str) else {})},
                state=target,
            )
            written = await self._append(conn, tid, execution, [step], now)
            if written is None:  # cannot happen while the row lock is held
                raise Conflict(f"execution {execution_id} changed during the rollback; retry")
            appended, last_state = written
        await self._after_append(tenant_id, execution, appended, last_state)
        return appended[0]

    async def fork(
        self,
        tenant_id: uuid.UUID,
        execution_id: str,
        at: StepRef,
        *,
        state_patch: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Execution:
        """A new execution sharing this one's history up to ``at``; with a
        ``state_patch`` its first own step is a ``fork`` step with the patched state."""
        tid = tenant_id
        if metadata is not None:
            check.check_json_object(metadata, "metadata")
        if state_patch is not None:
            states.check_patch(state_patch, "state_patch")
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            # the parent's steps up to `at` never change, so reading them needs no lock
            parent = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, parent)
            seq = await self.resolve(conn, tid, parent, segments, at, "at", InvalidInput)
            fields = {**_fork_fields(parent, seq, metadata), "keyframe_seq": 0}
            if state_patch is None:
                return await repo.insert_execution(conn, tid, fields, keyframe_of=segments)
            async with conn.transaction():
                fork = await repo.insert_execution(conn, tid, fields, keyframe_of=segments)
                step = NewStep(
                    kind="fork", name=f"fork at {seq}", input={"at": seq}, state_patch=state_patch
                )
                written = await self._append(conn, tid, fork, [step], fork.created_at)
                if written is None:  # nobody else knows the new fork yet
                    raise Conflict("the new fork changed while it was created; retry")
                appended, last_state = written
                fork.head_seq = appended[-1].seq
        await self._after_append(tenant_id, fork, appended, last_state)
        return fork

    async def replay(
        self,
        tenant_id: uuid.UUID,
        execution_id: str,
        *,
        from_ref: StepRef | None = None,
        to_ref: StepRef | None = None,
        speed: float = 1.0,
        after_seq: int | None = None,
        heartbeat_s: float = 15.0,
    ) -> AsyncIterator[StateAt | ReplayStep | None]:
        """First the state before the first step sent (a ``StateAt``), then one
        ``ReplayStep`` per step, ``None`` as a heartbeat during a long wait.
        ``after_seq`` resumes after a step already delivered."""
        if not 0 <= speed <= MAX_SPEED:
            raise InvalidInput(
                f"speed must be between 0 and {MAX_SPEED:g}", errors=[FieldError("speed", "range")]
            )
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, execution)
            first = await self.resolve(conn, tid, execution, segments, from_ref, "from", InvalidInput)
            last = await self.resolve(conn, tid, execution, segments, to_ref, "to", InvalidInput)
            first = max(first if from_ref is not None else 1, 1, (after_seq or 0) + 1)
            state = await self.history.state_at(conn, segments, min(first - 1, last))
        yield StateAt(execution.id, min(first - 1, last), state)
        previous_end = None
        position = first - 1
        while position < last:
            async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
                hi = min(last, position + REPLAY_PAGE)
                steps = await step_rows.read_steps(conn, segments, position, hi, REPLAY_PAGE, details=True)
                rows = await step_rows.read_patches(conn, segments, position, hi)
            for step, (_, full, patch_text) in zip(steps, rows, strict=True):
                if full is not None:
                    new_state = states.decode(full)
                    patch = states.diff(state, new_state)
                else:
                    patch = states.decode(patch_text or "[]")
                    new_state = states.apply_in_place(state, states.copy(patch), "stored patch")
                state = new_state
                gap = 0.0 if previous_end is None else (step.ended_at - previous_end).total_seconds()
                previous_end = step.ended_at
                wait = max(gap, 0.0) * speed
                while wait > heartbeat_s:
                    await asyncio.sleep(heartbeat_s)
                    wait -= heartbeat_s
                    yield None
                if wait > 0:
                    await asyncio.sleep(wait)
                yield ReplayStep(step, patch, wait_s=max(gap, 0.0) * speed)
            position = hi


def _fork_fields(parent: Execution, seq: int, metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "task_id": parent.task_id,
        "environment_id": parent.environment_id,
        "agent_id": parent.agent_id,
        "metadata": dict(parent.metadata) if metadata is None else metadata,
        "parent_id": uuid.UUID(parent.id),
        "fork_seq": seq,
        "head_seq": seq,
    }
