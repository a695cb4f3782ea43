"""The read side of ``ExecutionService``: timeline, steps, state, diff, checkpoints, lineage.

A mixin so that callers see one service; it relies on the attributes and the
``load`` method that ``ExecutionService`` defines. A step reference (``StepRef``)
resolves against the execution's whole lineage: a fork sees its parent's steps
and checkpoint labels up to its fork point. References in a query (``?at=``)
that name nothing are 404; references in a body (``{"to": ...}``) are 422.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import Conflict, FieldError, InvalidInput, MemoryServiceError, NotFound
from memory_service.executions import repository as repo
from memory_service.executions import states
from memory_service.executions import steps_repository as step_rows
from memory_service.executions import validation as check
from memory_service.executions.history import HistoryReader
from memory_service.executions.models import (
    Checkpoint,
    Diff,
    DiffSummary,
    Execution,
    Lineage,
    LineageLink,
    StateAt,
    Step,
    StepRef,
)
from memory_service.executions.repository import Conn, Segment
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.validation import check_text

MAX_STEP_PAGE = 1000


class ExecutionReads:
    pool: AsyncConnectionPool
    cursors: CursorCodec
    history: HistoryReader

    async def load(
        self, conn: Conn, tenant_id: uuid.UUID, execution_id: str, *, for_update: bool = False
    ) -> Execution:
        raise NotImplementedError

    # -- timeline --------------------------------------------------------------------------
    async def list_steps(
        self,
        tenant_id: uuid.UUID,
        execution_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        after_seq: int = 0,
    ) -> Page[Step]:
        """The timeline in seq order, inherited steps of a fork included."""
        if not 1 <= limit <= MAX_STEP_PAGE:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_STEP_PAGE}", errors=[FieldError("limit", "range")]
            )
        kind = f"steps:{execution_id}"
        if cursor:
            position = self.cursors.decode(cursor, kind, tenant_id)
            if not isinstance(position, int):
                raise InvalidInput("cursor is not valid", errors=[FieldError("cursor", "malformed")])
            after_seq = max(after_seq, position)
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, execution)
            rows = await step_rows.read_steps(conn, segments, after_seq, execution.head_seq, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        token = self.cursors.encode(kind, tenant_id, rows[-1].seq) if more else None
        return Page(rows, token)

    async def get_step(
        self,
        tenant_id: uuid.UUID,
        execution_id: str,
        seq: int,
        *,
        include_state: bool = False,
        include_patch: bool = False,
    ) -> Step:
        """One step with its input, output, error and metadata; optionally its state and
        its patch against the previous step's state."""
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, execution)
            found = await step_rows.read_steps(conn, segments, seq - 1, seq, 1, details=True)
            if not found or found[0].seq != seq:
                raise NotFound(f"execution {execution_id} has no step {seq}")
            step = found[0]
            if include_state or include_patch:
                state = await self.history.state_at(conn, segments, seq)
                if include_state:
                    step.state = state
                if include_patch:
                    before = await self.history.state_at(conn, segments, seq - 1)
                    step.state_patch = states.diff(before, state)
        return step

    # -- state and diff --------------------------------------------------------------------
    async def state_at(
        self, tenant_id: uuid.UUID, execution_id: str, at: StepRef | None = None
    ) -> StateAt:
        """The state after the step ``at`` names (the head when None)."""
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, execution)
            seq = await self.resolve(conn, tid, execution, segments, at, "at", NotFound)
            state = await self.history.state_at(conn, segments, seq)
        return StateAt(execution.id, seq, state)

    async def diff(
        self,
        tenant_id: uuid.UUID,
        execution_id: str,
        from_ref: StepRef,
        to_ref: StepRef | None = None,
        *,
        from_execution: str | None = None,
    ) -> Diff:
        """The patch from one step's state to another's. ``from_execution`` names
        another execution of the same lineage tree (a fork's parent, say)."""
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            target = await self.load(conn, tenant_id, execution_id)
            source = target
            if from_execution is not None and from_execution != execution_id:
                source = await self.load(conn, tenant_id, from_execution)
                await self._check_related(conn, tid, source, target)
            source_segments = await self.history.segments(conn, tid, source)
            target_segments = await self.history.segments(conn, tid, target)
            from_seq = await self.resolve(conn, tid, source, source_segments, from_ref, "from", NotFound)
            to_seq = await self.resolve(conn, tid, target, target_segments, to_ref, "to", NotFound)
            before = await self.history.state_at(conn, source_segments, from_seq)
            after = await self.history.state_at(conn, target_segments, to_seq)
        patch = states.diff(before, after)
        added, removed, changed = states.summarise(patch)
        return Diff(source.id, from_seq, target.id, to_seq, patch, DiffSummary(added, removed, changed))

    async def _check_related(
        self, conn: Conn, tid: uuid.UUID, one: Execution, other: Execution
    ) -> None:
        roots = []
        for execution in (one, other):
            chain = await repo.ancestors(conn, tid, uuid.UUID(execution.id))
            roots.append(chain[-1].id)
        if roots[0] != roots[1]:
            raise InvalidInput(
                f"executions {one.id} and {other.id} are unrelated: neither shares history "
                "with the other through forks",
                errors=[FieldError("from_execution", "not in the same lineage")],
            )

    async def resolve(
        self,
        conn: Conn,
        tid: uuid.UUID,
        execution: Execution,
        segments: list[Segment],
        ref: StepRef | None,
        where: str,
        missing: type[MemoryServiceError],
    ) -> int:
        """The seq a reference names in this execution's lineage."""
        if ref is None:
            return execution.head_seq
        if isinstance(ref, datetime):
            found = await step_rows.last_seq_at(conn, segments, ref) if segments else None
            if found is None:
                raise missing(
                    f"{where}: execution {execution.id} had no step by {ref.isoformat()}",
                    errors=[FieldError(where, "before the first step")],
                )
            return found
        if isinstance(ref, str):
            marks = await repo.checkpoints(conn, tid, _visible(execution, segments), ref)
            if not marks:
                raise missing(
                    f"{where}: execution {execution.id} has no checkpoint {ref!r}",
                    errors=[FieldError(where, "no such checkpoint label")],
                )
            return marks[0].seq
        if not 0 <= ref <= execution.head_seq:
            raise missing(
                f"{where}: execution {execution.id} has no step {ref} (its last is "
                f"{execution.head_seq})",
                errors=[FieldError(where, f"a seq from 0 to {execution.head_seq}")],
            )
        return ref

    # -- checkpoints -----------------------------------------------------------------------
    async def create_checkpoint(
        self, tenant_id: uuid.UUID, execution_id: str, label: str, seq: int | None = None,
        note: str | None = None,
    ) -> Checkpoint:
        """Name a step (the head when ``seq`` is None); labels are unique per execution."""
        check.check_label(label)
        check_text(note, "note", check.MAX_NOTE)
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn, conn.transaction():
            execution = await self.load(conn, tenant_id, execution_id, for_update=True)
            if seq is None and execution.head_seq == 0:
                raise Conflict(
                    f"execution {execution_id} has no steps yet: nothing to name",
                    errors=[FieldError("seq", "no steps yet")],
                )
            target = execution.head_seq if seq is None else seq
            if not 1 <= target <= execution.head_seq:
                raise InvalidInput(
                    f"seq must name a step of execution {execution_id} (1 to {execution.head_seq})",
                    errors=[FieldError("seq", f"from 1 to {execution.head_seq}")],
                )
            own = Segment(uuid.UUID(execution.id), 0, execution.head_seq)
            if await repo.checkpoints(conn, tid, [own], label):
                raise Conflict(
                    f"execution {execution_id} already has a checkpoint {label!r}",
                    errors=[FieldError("label", "already used")],
                )
            return await repo.insert_checkpoint(conn, tid, own.execution_id, label, target, note)

    async def list_checkpoints(self, tenant_id: uuid.UUID, execution_id: str) -> list[Checkpoint]:
        """Own labels and the ancestors' labels up to the fork point, by seq."""
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            segments = await self.history.segments(conn, tid, execution)
            return await repo.checkpoints(conn, tid, _visible(execution, segments))

    async def delete_checkpoint(self, tenant_id: uuid.UUID, execution_id: str, label: str) -> None:
        """Only the execution's own labels can be deleted (an inherited one is 404)."""
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            eid = uuid.UUID(execution.id)
            if not await repo.delete_checkpoint(conn, tenant_id, eid, label):
                raise NotFound(f"execution {execution_id} has no checkpoint {label!r}")

    # -- lineage ---------------------------------------------------------------------------
    async def lineage(self, tenant_id: uuid.UUID, execution_id: str) -> Lineage:
        tid = tenant_id
        async with wrap_db_errors(), repo.autocommit(self.pool) as conn:
            execution = await self.load(conn, tenant_id, execution_id)
            eid = uuid.UUID(execution.id)
            chain = await repo.ancestors(conn, tid, eid) if execution.parent_id else [execution]
            forks = await repo.forks_of(conn, tid, eid)
        # each ancestor link carries the seq its child forked it at
        links = [
            LineageLink(parent.id, child.fork_seq, parent.created_at)
            for child, parent in itertools.pairwise(chain)
        ]
        return Lineage(
            execution.id,
            ancestors=list(reversed(links)),
            forks=[LineageLink(f.id, f.fork_seq, f.created_at) for f in forks],
        )


def _visible(execution: Execution, segments: list[Segment]) -> list[Segment]:
    """Where labels may come from: the execution itself (any seq up to its head) first,
    then each ancestor up to the seq the lineage reaches into it."""
    eid = uuid.UUID(execution.id)
    own = Segment(eid, 0, execution.head_seq)
    return [own, *(s for s in segments if s.execution_id != eid)]
