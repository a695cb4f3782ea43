"""``WorkflowService``: definitions, runs and operator commands, one transaction each.

Each public method checks its input, opens one transaction, locks the run row
(where it changes a run) and calls the engine; the events and wake-ups that the
transition collected are written before commit. Workers' calls (claim,
heartbeat, complete, fail) live in ``memory_service.workflows.workers``.
Another tenant's definition or run is a ``NotFound``, exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import Conflict, FieldError, InvalidInput, NotFound
from memory_service.events.outbox import OutboxMover
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.records.tenants import parse_uuid
from memory_service.validation import check_choice, check_json_object, check_json_value, check_text
from memory_service.workflows import engine
from memory_service.workflows import repository as repo
from memory_service.workflows.definitions import ancestors, digest, parse_definition
from memory_service.workflows.models import RUN_STATUSES, Definition, Run, RunQuery
from memory_service.workflows.timeline import RunTimeline
from memory_service.workflows.transition import Transition

T = TypeVar("T")
MAX_LIST_LIMIT = 1000
MAX_NAME = 128
MAX_KEY = 256


class WorkflowService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        *,
        max_json_bytes: int = 64 * 1024,
        timeline: RunTimeline | None = None,
        wake_local: Callable[[str, int | None], object] | None = None,
        outbox: OutboxMover | None = None,
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self.max_json_bytes = max_json_bytes
        self.timeline = timeline
        # this process's waiting claims need not wait for their own NOTIFY to come back
        self.wake_local = wake_local
        self.outbox = outbox

    @asynccontextmanager
    async def transition(self) -> AsyncIterator[Transition]:
        """One transaction; its events are staged and its notifications sent just before
        commit; the outbox mover and the executions of the runs it moved catch up after."""
        # in pipeline mode, statements whose results the engine does not read (BEGIN, the
        # step updates, the staged events, NOTIFY, COMMIT) travel with the next one that
        # it does, instead of costing a round trip each; an error still aborts the
        # transaction, reported at the next read
        async with (
            wrap_db_errors(),
            self.pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            tx = Transition(conn)
            yield tx
            await tx.finish()
        if self.outbox is not None and tx.events:
            self.outbox.touched(tx.events)
        if self.wake_local is not None:
            for topic, count in tx.wakeups():
                self.wake_local(topic, count)
        if self.timeline is not None and tx.timelines:
            self.timeline.touched(tx.timelines)

    async def _new_execution(self, tenant_id: uuid.UUID, run_id: str, workflow: str) -> str | None:
        if self.timeline is None:
            return None
        return await self.timeline.create(tenant_id, run_id, workflow)

    def check_json(self, value: Any, where: str) -> Any:
        return check_json_value(value, where, self.max_json_bytes)

    # -- definitions ---------------------------------------------------------------------
    async def put_definition(self, tenant_id: uuid.UUID, name: str, body: Any) -> tuple[Definition, bool]:
        """A new version when the definition changed; the current one when it did not."""
        check_name(name)
        self.check_json(body, "body")
        definition = parse_definition(body)
        fingerprint = digest(definition)
        async with self.transition() as tx:
            await repo.lock_name(tx.conn, tenant_id, name)
            latest = await repo.get_definition(tx.conn, tenant_id, name)
            if latest is not None and latest.digest == fingerprint:
                return latest, False
            version = 1 if latest is None else latest.version + 1
            stored = await repo.insert_definition(
                tx.conn, tenant_id, name, version, fingerprint, definition
            )
            return stored, True

    async def get_definition(
        self, tenant_id: uuid.UUID, name: str, version: int | None = None
    ) -> tuple[Definition, list[tuple[int, Any]]]:
        check_name(name)
        async with wrap_db_errors(), self.pool.connection() as conn:
            found = await repo.get_definition(conn, tenant_id, name, version)
            if found is None:
                what = f"version {version} of workflow" if version else "workflow"
                raise NotFound(f"{what} {name!r} does not exist")
            return found, await repo.versions(conn, tenant_id, name)

    async def list_definitions(
        self, tenant_id: uuid.UUID, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Definition]:
        check_limit(limit)
        after = str(self.cursors.decode(cursor, "workflows", tenant_id)) if cursor else ""
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await repo.list_definitions(conn, tenant_id, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        token = self.cursors.encode("workflows", tenant_id, rows[-1].name) if more else None
        return Page(rows, token)

    # -- runs ----------------------------------------------------------------------------
    async def start_run(
        self,
        tenant_id: uuid.UUID,
        name: str,
        run_input: Any,
        idempotency_key: str | None = None,
        version: int | None = None,
    ) -> tuple[Run, bool]:
        """A new run, or (False) the run that ``idempotency_key`` already started."""
        check_name(name)
        self.check_json(run_input, "input")
        check_text(idempotency_key, "idempotency_key", MAX_KEY)
        if idempotency_key is not None:
            async with wrap_db_errors(), self.pool.connection() as conn:
                existing = await repo.run_by_key(conn, tenant_id, name, idempotency_key)
            if existing is not None:
                return _same_input(existing, run_input), False
        async with wrap_db_errors(), self.pool.connection() as conn:
            if await repo.get_definition(conn, tenant_id, name, version) is None:
                raise NotFound(f"workflow {name!r} does not exist")
        run_id = str(uuid.uuid4())
        execution_id = await self._new_execution(tenant_id, run_id, name)
        async with self.transition() as tx:
            definition = await repo.get_definition(tx.conn, tenant_id, name, version)
            assert definition is not None  # definitions are never deleted
            run = await repo.insert_run(
                tx.conn,
                tenant_id,
                definition,
                run_input,
                idempotency_key,
                run_id=run_id,
                execution_id=execution_id,
            )
            if run is None:  # a concurrent start with the same key won
                assert idempotency_key is not None
                existing = await repo.run_by_key(tx.conn, tenant_id, name, idempotency_key)
                assert existing is not None
                return _same_input(existing, run_input), False
            await self._lay_out(tx, run, definition, {})
        return await self.get_run(tenant_id, run.id), True

    async def _lay_out(
        self, tx: Transition, run: Run, definition: Definition, reused: dict[str, Any]
    ) -> None:
        """Insert the run's step rows (``reused`` ones already completed) and start the roots."""
        rows = []
        for position, spec in enumerate(definition.steps):
            done = spec["id"] in reused
            rows.append(
                {
                    "step_id": spec["id"],
                    "position": position,
                    "kind": spec["kind"],
                    "queue": spec["queue"],
                    "spec": spec,
                    "depends_on": spec["depends_on"],
                    "pending_deps": sum(d not in reused for d in spec["depends_on"]),
                    "status": "completed" if done else "pending",
                    "output": reused.get(spec["id"]),
                    "reused": done,
                }
            )
        steps = await repo.insert_steps(tx.conn, run.tenant_id, run.id, rows)
        if reused:
            run.steps_completed = await repo.count_completed(tx.conn, run.id, len(reused))
        tx.emit("workflow.run.started", run, version=run.version, forked_from=run.forked_from)
        for step in steps:
            if step.status == "pending" and step.pending_deps == 0:
                await engine.activate(tx, run, step)

    async def get_run(self, tenant_id: uuid.UUID, run_id: str) -> Run:
        async with wrap_db_errors(), self.pool.connection() as conn:
            run = await repo.get_run(conn, tenant_id, _run_uuid(run_id))
            if run is None:
                raise NotFound(f"workflow run {run_id} does not exist")
            run.steps = await repo.run_steps(conn, run.id)
        return run

    async def list_runs(
        self, tenant_id: uuid.UUID, query: RunQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Run]:
        """Newest first; the cursor holds the last seq returned."""
        check_limit(limit)
        if query.status is not None:
            check_choice(query.status, "status", RUN_STATUSES)
        if query.workflow is not None:
            check_name(query.workflow, "workflow")
        before = 2**63 - 1
        if cursor:
            position = self.cursors.decode(cursor, "workflow-runs", tenant_id)
            if not isinstance(position, int):
                raise InvalidInput(
                    "cursor is not valid", errors=[FieldError("cursor", "malformed")]
                )
            before = position
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await repo.list_runs(conn, tenant_id, query, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        token = self.cursors.encode("workflow-runs", tenant_id, rows[-1].seq) if more else None
        return Page(rows, token)

    async def _command(
        self, tenant_id: uuid.UUID, run_id: str, action: Callable[[Transition, Run], Awaitable[T]]
    ) -> T:
        async with self.transition() as tx:
            run = await repo.get_run(tx.conn, tenant_id, _run_uuid(run_id), lock=True)
            if run is None:
                raise NotFound(f"workflow run {run_id} does not exist")
            return await action(tx, run)

    async def cancel(self, tenant_id: uuid.UUID, run_id: str) -> Run:
        async def act(tx: Transition, run: Run) -> None:
            _require_status(run, "running", "cancel")
            await engine.cancel_run(tx, run)

        await self._command(tenant_id, run_id, act)
        return await self.get_run(tenant_id, run_id)

    async def retry(self, tenant_id: uuid.UUID, run_id: str) -> Run:
        current = await self.get_run(tenant_id, run_id)
        _require_status(current, "failed", "retry")
        execution_id = None
        if self.timeline is not None and current.execution_id is not None:
            execution_id = await self.timeline.continue_in_fork(
                tenant_id, current.id, current.execution_id
            )

        async def act(tx: Transition, run: Run) -> None:
            _require_status(run, "failed", "retry")
            if execution_id is not None:
                await repo.reopen_timeline(tx.conn, run.id, execution_id)
                run.execution_id = execution_id
            await engine.retry_run(tx, run)

        await self._command(tenant_id, run_id, act)
        return await self.get_run(tenant_id, run_id)

    async def signal(self, tenant_id: uuid.UUID, run_id: str, name: str, payload: Any) -> int:
        """Deliver a signal; answers how many waiting steps it released."""
        check_name(name, "name")
        self.check_json(payload, "payload")

        async def act(tx: Transition, run: Run) -> int:
            _require_status(run, "running", "signal")
            return await engine.deliver_signal(tx, run, name, payload)

        return await self._command(tenant_id, run_id, act)

    async def fork(
        self, tenant_id: uuid.UUID, run_id: str, from_step: str, input_patch: Any = None
    ) -> Run:
        """A new run of the same version that reuses the outputs upstream of ``from_step``."""
        if input_patch is not None:
            check_json_object(input_patch, "input_patch", self.max_json_bytes)
        source = await self.get_run(tenant_id, run_id)
        async with wrap_db_errors(), self.pool.connection() as conn:
            definition = await repo.definition_by_id(conn, source.definition_id)
        upstream = ancestors(definition.steps)
        if from_step not in upstream:
            raise InvalidInput(
                f"workflow {definition.name!r} has no step {from_step!r}",
                errors=[FieldError("from_step", "unknown step")],
            )
        outputs = {
            s.step_id: s.output
            for s in source.steps
            if s.step_id in upstream[from_step] and s.status == "completed"
        }
        missing = upstream[from_step] - set(outputs)
        if missing:
            raise Conflict(
                f"step {sorted(missing)[0]!r} before {from_step!r} has no output to reuse",
                errors=[FieldError("from_step", "upstream steps not completed")],
            )
        new_input = merge_patch(source.input, input_patch) if input_patch else source.input
        self.check_json(new_input, "input")
        new_id = str(uuid.uuid4())
        execution_id = await self._new_execution(tenant_id, new_id, source.workflow)
        async with self.transition() as tx:
            run = await repo.insert_run(
                tx.conn,
                tenant_id,
                definition,
                new_input,
                None,
                run_id=new_id,
                execution_id=execution_id,
                forked_from=source.id,
                fork_step=from_step,
            )
            assert run is not None
            await self._lay_out(tx, run, definition, outputs)
        return await self.get_run(tenant_id, new_id)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def check_name(name: str, where: str = "name") -> str:
    text = check_text(name, where, MAX_NAME, required=True)
    assert text is not None
    if not all(c.isalnum() or c in "_-." for c in text):
        raise InvalidInput(
            f"{where} uses letters, digits, '_', '-' and '.' only",
            errors=[FieldError(where, "letters, digits, _ - .")],
        )
    return text


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(
            f"limit must be between 1 and {MAX_LIST_LIMIT}", errors=[FieldError("limit", "range")]
        )


def _run_uuid(run_id: str) -> str:
    return str(parse_uuid(run_id, "run_id"))


def _same_input(existing: Run, run_input: Any) -> Run:
    if existing.input != run_input:
        raise Conflict(
            "this idempotency_key started a run with another input",
            errors=[FieldError("idempotency_key", "already used with another input")],
        )
    return existing


def _require_status(run: Run, status: str, action: str) -> None:
    if run.status != status:
        raise Conflict(f"cannot {action} a {run.status} run (it must be {status})")
