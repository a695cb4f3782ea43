"""``ExecutionService``: executions and their steps, created, read and appended.

The write path of a step batch, all in one transaction under the execution's
row lock: rebuild the head state (usually from the cache), then for each step
compute the new state and the patch from the previous one, decide keyframe or
patch, and check sizes; only when every step passed are the rows inserted and
the head moved. A failure anywhere raises before the insert, so nothing of the
batch is written. After commit each step goes to the event log as
``execution.step`` (ids, kind, name, duration; never state). Time travel (state
at a reference, diff, rollback, fork, lineage, replay) lives in ``travel.py``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unavailable,
)
from memory_service.executions import repository as repo
from memory_service.executions import states
from memory_service.executions import steps_repository as step_rows
from memory_service.executions import validation as check
from memory_service.executions.history import HeadState, HistoryReader, StateCache
from memory_service.executions.models import (
    FINISHED,
    Execution,
    ExecutionChanges,
    ExecutionQuery,
    NewExecution,
    NewStep,
    Step,
)
from memory_service.executions.repository import Conn
from memory_service.executions.steps_repository import StoredStep
from memory_service.executions.travel import ExecutionTravel
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.records.tenants import parse_uuid

MAX_LIST_LIMIT = 1000
APPEND_ATTEMPTS = 4


class StepEvents(Protocol):
    """Where appended steps are announced (the event log's writer fits)."""

    async def emit(self, tenant_id: uuid.UUID, type: str, *, severity: str = "info", **fields: Any) -> None: ...


class ExecutionLimits:
    def __init__(
        self,
        *,
        keyframe_interval: int = 50,
        max_state_bytes: int = 1024 * 1024,
        max_batch: int = 1000,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if keyframe_interval < 1 or max_state_bytes < 1 or max_batch < 1:
            raise ValueError("execution limits must be positive")
        self.keyframe_interval = keyframe_interval
        self.max_state_bytes = max_state_bytes
        self.max_batch = max_batch
        self.cache_bytes = cache_bytes


class ExecutionService(ExecutionTravel):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        limits: ExecutionLimits,
        events: StepEvents | None = None,
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self.limits = limits
        self.events = events
        self.history = HistoryReader(StateCache(limits.cache_bytes))

    # -- executions ------------------------------------------------------------------------
    async def create(self, tenant_id: uuid.UUID, new: NewExecution) -> Execution:
        fields = check.check_new_execution(new)
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn, conn.transaction():
            await self._check_refs(conn, tid, fields)
            return await repo.insert_execution(conn, tid, fields)

    async def get(self, tenant_id: uuid.UUID, execution_id: str) -> Execution:
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            return await self.load(conn, tenant_id, execution_id)

    async def list_executions(
        self, tenant_id: uuid.UUID, query: ExecutionQuery, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Execution]:
        """Newest first."""
        _check_limit(limit)
        ids = check.check_query(query)
        before = self._position(cursor, "executions", tenant_id) if cursor else None
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            rows = await repo.list_executions(
                conn, tenant_id, query, ids, before, limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        token = self.cursors.encode("executions", tenant_id, rows[-1].seq) if more else None
        return Page(rows, token)

    async def update(
        self, tenant_id: uuid.UUID, execution_id: str, changes: ExecutionChanges, if_match: int | None
    ) -> Execution:
        check.check_changes(changes)
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn, conn.transaction():
            current = await self.load(conn, tenant_id, execution_id, for_update=True)
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    f"execution {execution_id} is at version {current.version}, not {if_match}",
                    current=current,
                )
            _check_transition(current, changes.status)
            return await repo.update_execution(
                conn, tid, uuid.UUID(current.id), changes.status, changes.metadata
            )

    # -- steps -----------------------------------------------------------------------------
    async def append_steps(
        self, tenant_id: uuid.UUID, execution_id: str, steps: Sequence[NewStep]
    ) -> list[Step]:
        """Append a batch (1..max_batch) after the head, all or nothing."""
        self._check_batch(steps)
        tid = tenant_id
        eid = parse_uuid(execution_id, "execution_id")
        known = self.history.known_head(tid, eid)
        if known is not None:
            # the head this process wrote last, state and all: one statement, which
            # writes only if that is still the head
            execution, state = known
            async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
                written = await self._write(conn, tid, execution, state, steps, None)
            if written is not None:
                await self._after_append(tenant_id, execution, *written)
                return written[0]
            self.history.forget_head(eid)
        # otherwise read the head without a transaction, then write with a
        # compare-and-set on it (two round trips); a writer that keeps losing races
        # takes the row lock for its last attempt, which cannot lose
        for attempt in range(APPEND_ATTEMPTS):
            locked = attempt == APPEND_ATTEMPTS - 1
            async with (
                wrap_db_errors(),
                repo.autocommit(self.pool) as conn,
                conn.transaction() if locked else contextlib.nullcontext(),
            ):
                found = await repo.lock_execution(conn, tid, eid, lock=locked)
                if found is None:
                    raise NotFound(f"execution {execution_id} not found")
                execution, now = found
                written = await self._append(conn, tid, execution, steps, now)
            if written is not None:
                appended, last_state = written
                await self._after_append(tenant_id, execution, appended, last_state)
                return appended
        raise Unavailable("the execution kept changing while the steps were appended; retry")

    async def _append(
        self,
        conn: Conn,
        tid: uuid.UUID,
        execution: Execution,
        steps: Sequence[NewStep],
        recorded: datetime,
    ) -> tuple[list[Step], HeadState] | None:
        """Computes and writes the steps after ``execution.head_seq``; None when another
        writer took those seqs first (or finished the execution meanwhile).
        ``recorded`` is the database clock."""
        _check_open(execution)
        segments = await self.history.segments(conn, tid, execution)
        state = await self.history.state_at(conn, segments, execution.head_seq)
        return await self._write(conn, tid, execution, state, steps, recorded)

    async def _write(
        self,
        conn: Conn,
        tid: uuid.UUID,
        execution: Execution,
        state: Any,
        steps: Sequence[NewStep],
        recorded: datetime | None,
    ) -> tuple[list[Step], HeadState] | None:
        """Writes the steps after ``execution`` (its head and ``state``) in one statement;
        None when that is no longer the head. ``recorded``: the database clock when None."""
        expected = (execution.head_seq, execution.keyframe_seq)
        rows, last_state = self._prepare(execution, state, steps)
        outcome = await step_rows.insert_steps(
            conn, tid, uuid.UUID(execution.id), rows, expected, execution.keyframe_seq, recorded
        )
        if not outcome.written:
            if outcome.head_seq is None:
                raise NotFound(f"execution {execution.id} not found")
            if outcome.status in FINISHED:  # finished since it was read (or remembered)
                execution.status = outcome.status
                _check_open(execution)
            return None
        execution.head_seq = rows[-1].seq
        return [_step(execution.id, row, outcome.recorded_at) for row in rows], last_state

    async def _after_append(
        self, tenant_id: uuid.UUID, execution: Execution, appended: list[Step], last_state: HeadState
    ) -> None:
        """After commit: cache the new head state and announce the steps."""
        execution.head_seq = appended[-1].seq
        self.history.remember_head(tenant_id, execution, last_state)
        await self._announce(tenant_id, execution, appended)

    def _check_batch(self, steps: Sequence[NewStep]) -> None:
        if not steps:
            raise InvalidInput("steps must not be empty", errors=[FieldError("steps", "empty")])
        if len(steps) > self.limits.max_batch:
            raise PayloadTooLarge(
                f"a batch holds at most {self.limits.max_batch} steps, not {len(steps)}",
                errors=[FieldError("steps", f"at most {self.limits.max_batch}")],
            )
        for i, step in enumerate(steps):
            check.check_step(step, f"steps[{i}].", self.limits.max_state_bytes)

    def _prepare(
        self, execution: Execution, state: Any, steps: Sequence[NewStep]
    ) -> tuple[list[StoredStep], HeadState]:
        """The rows to insert and the last state; updates execution.keyframe_seq."""
        rows: list[StoredStep] = []
        encoded = b""
        owned = True  # ``state`` is this call's to change (a caller's full state is not)
        for i, step in enumerate(steps):
            seq = execution.head_seq + i + 1
            where = f"steps[{i}]."
            if step.seq is not None and step.seq != seq:
                raise Conflict(
                    f"{where}seq is {step.seq} but the next step of this execution is {seq}",
                    errors=[FieldError(f"{where}seq", f"expected {seq}")],
                )
            if step.parent_seq is not None and step.parent_seq >= seq:
                raise InvalidInput(
                    f"{where}parent_seq must be before the step",
                    errors=[FieldError(f"{where}parent_seq", f"below {seq}")],
                )
            if step.has_state:
                state, patch, owned = step.state, states.diff(state, step.state), False
            elif step.state_patch is not None:
                patch = states.check_patch(step.state_patch, f"{where}state_patch")
                check.check_json_value(patch, f"{where}state_patch", self.limits.max_state_bytes)
                state = states.apply_in_place(
                    state if owned else states.copy(state), patch, f"{where}state_patch"
                )
                owned = True
            else:
                patch = []
            row, encoded = self._row(execution, seq, step, (state, patch), where)
            rows.append(row)
        return rows, HeadState(encoded, state, owned)

    def _row(
        self,
        execution: Execution,
        seq: int,
        step: NewStep,
        change: tuple[Any, list[Any]],
        where: str,
    ) -> tuple[StoredStep, bytes]:
        state, patch = change
        # checked with its step (check_step), or a checked state with a checked patch applied
        encoded = check.check_json_value(
            state, f"{where}state", self.limits.max_state_bytes, nul_checked=True
        )
        patch_json = states.encode(patch)
        keyframe = (
            seq - execution.keyframe_seq >= self.limits.keyframe_interval
            or execution.keyframe_seq == 0
            or 2 * len(patch_json) >= len(encoded)
        )
        if keyframe:
            execution.keyframe_seq = seq
        ended = step.ended_at  # None: when it is recorded
        row = StoredStep(
            seq=seq,
            kind=step.kind,
            name=step.name,
            input=step.input,
            output=step.output,
            error=step.error,
            metadata=step.metadata,
            parent_seq=step.parent_seq if step.parent_seq is not None else seq - 1,
            started_at=step.started_at or ended,
            ended_at=ended,
            state_json=encoded.decode() if keyframe else None,
            patch_json=None if keyframe else patch_json.decode(),
            state_size=len(encoded),
            changed_paths=len(patch),
        )
        return row, encoded

    async def _announce(self, tenant_id: uuid.UUID, execution: Execution, steps: list[Step]) -> None:
        if self.events is None:
            return
        for step in steps:
            await self.events.emit(
                tenant_id,
                "execution.step",
                severity="warn" if step.has_error else "info",
                execution_id=execution.id,
                task_id=execution.task_id,
                agent_id=execution.agent_id,
                duration_ms=round(step.duration_ms, 3),
                attributes={"seq": step.seq, "kind": step.kind, "name": step.name},
            )

    # -- shared helpers --------------------------------------------------------------------
    async def load(
        self, conn: Conn, tenant_id: uuid.UUID, execution_id: str, *, for_update: bool = False
    ) -> Execution:
        eid = parse_uuid(execution_id, "execution_id")
        found = await repo.get_execution(conn, tenant_id, eid, for_update=for_update)
        if found is None:
            raise NotFound(f"execution {execution_id} not found")
        return found

    async def _check_refs(self, conn: Conn, tid: uuid.UUID, fields: dict[str, Any]) -> None:
        for name, table in (("task_id", "tasks"), ("environment_id", "environments")):
            if name in fields and not await repo.row_exists(conn, table, tid, fields[name]):
                raise InvalidInput(
                    f"{name} {fields[name]} does not exist",
                    errors=[FieldError(name, f"no such {table[:-1]}")],
                )

    def _position(self, cursor: str, kind: str, tenant_id: uuid.UUID) -> int:
        position = self.cursors.decode(cursor, kind, tenant_id)
        if not isinstance(position, int):
            raise InvalidInput("cursor is not valid for this listing", errors=[FieldError("cursor", "malformed")])
        return position


def _step(execution_id: str, row: StoredStep, recorded: datetime) -> Step:
    return Step(
        execution_id=execution_id,
        seq=row.seq,
        kind=row.kind,
        name=row.name,
        started_at=row.started_at or row.ended_at or recorded,
        ended_at=row.ended_at or recorded,
        recorded_at=recorded,
        state_size=row.state_size,
        changed_paths=row.changed_paths,
        has_error=row.error is not None,
        keyframe=row.state_json is not None,
        parent_seq=row.parent_seq,
        input=row.input,
        output=row.output,
        error=row.error,
        metadata=row.metadata,
    )


def _check_transition(current: Execution, status: str | None) -> None:
    """``running`` moves to one of the finished statuses, and a finished one stays
    where it is (setting the same status again is a no-op, so a retry is safe)."""
    if status is None or status == current.status or current.status not in FINISHED:
        return
    raise Conflict(
        f"execution {current.id} is {current.status}; a finished execution cannot become {status}",
        errors=[FieldError("status", f"is {current.status}, which is final")],
    )


def _check_open(execution: Execution) -> None:
    """Steps go only to a running execution."""
    if execution.status in FINISHED:
        raise Conflict(
            f"execution {execution.id} is {execution.status}; steps can only be added while it is running",
            errors=[FieldError("status", f"is {execution.status}, not running")],
        )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(
            f"limit must be between 1 and {MAX_LIST_LIMIT}", errors=[FieldError("limit", "range")]
        )
