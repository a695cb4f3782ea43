"""Browser-storage migrations: dry runs, jobs with progress, and exact rollback.

``MigrationService.dry_run`` parses and validates a browser export, reads (never
writes) the tenant's source-id map, and answers what a migration would do. A
real migration is a job: ``start`` validates the same way, stores the job row
and runs it in the background, environments first (tasks point at them), then
tasks, then memories, embedded batch by batch. Each batch is one transaction
with its bookkeeping, and each is followed by a ``migration.progress`` event.
A job that fails (or a process that stops mid-job, found at the next start) is
undone whole, so a tenant never keeps half a migration; a finished job can be
rolled back later with ``rollback``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg_pool import AsyncConnectionPool

from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    MemoryServiceError,
    NotFound,
    Unavailable,
)
from memory_service.events.writer import EventWriter
from memory_service.infra.db import wrap_db_errors
from memory_service.memories.validation import MemoryValidator
from memory_service.records.tenants import parse_uuid
from memory_service.transfer import apply, jobs_store
from memory_service.transfer.browser import (
    BrowserPlan,
    Item,
    Rejected,
    parse_browser_storage,
)
from memory_service.transfer.jobs_store import MigrationJob

log = logging.getLogger(__name__)
KIND = "browser-storage"
PHASES = (("environment", "environments"), ("task", "tasks"), ("memory", "memories"))
MAX_REPORTED = 1000
# a running job holds a session advisory lock (this class, hash of its id): a process
# that starts later undoes only the unfinished jobs whose lock nobody holds
_LOCK_CLASS = 0x6D696772  # "migr"


@dataclass(slots=True)
class MigrationReport:
    valid: bool
    counts: dict[str, int]
    actions: dict[str, dict[str, int]]
    rejected: list[Rejected]
    ignored_keys: list[str]
    rejected_total: int = 0


class MigrationService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        embedder: CachedEmbedder,
        validator: MemoryValidator,
        events: EventWriter,
        *,
        batch_size: int = 256,
    ) -> None:
        self.pool = pool
        self.embedder = embedder
        self.validator = validator
        self.events = events
        self.batch_size = batch_size
        self._running: dict[str, asyncio.Task[None]] = {}

    # -- validation ----------------------------------------------------------------------
    async def dry_run(self, tenant_id: uuid.UUID, payload: Any) -> MigrationReport:
        plan = parse_browser_storage(payload, self.validator)
        tid = tenant_id
        actions: dict[str, dict[str, int]] = {}
        async with wrap_db_errors(), self.pool.connection() as conn:
            await self._check_environments(conn, tid, plan)
            async with conn.transaction(force_rollback=True):
                for entity, name in PHASES:
                    counted: dict[str, int] = {}
                    for batch in _batches(getattr(plan, name), 1000):
                        for d in await apply.classify(conn, tid, entity, batch):
                            counted[d.action] = counted.get(d.action, 0) + 1
                    actions[name] = counted
        return _report(plan, actions)

    async def _check_environments(self, conn: Any, tid: uuid.UUID, plan: BrowserPlan) -> None:
        """A task's environment must be in the file or made by an earlier migration."""
        in_file = {e.source_id for e in plan.environments}
        wanted = {t.environment_source for t in plan.tasks} - in_file - {None}
        known = await jobs_store.sources(conn, tid, "environment", [w for w in wanted if w])
        keep: list[Item] = []
        for task in plan.tasks:
            env = task.environment_source
            if env is None or env in in_file or env in known:
                keep.append(task)
            else:
                reason = f"environmentId {env!r} is neither in this file nor migrated before"
                plan.rejected.append(Rejected(task.key, task.pointer + "/environmentId", reason))
        plan.tasks = keep

    # -- jobs ----------------------------------------------------------------------------
    async def start(
        self, tenant_id: uuid.UUID, payload: Any, *, skip_invalid: bool = False
    ) -> MigrationJob:
        """Validate, then run the job in the background; 422 with the report if invalid."""
        tid = tenant_id
        plan = parse_browser_storage(payload, self.validator)
        async with wrap_db_errors(), self.pool.connection() as conn:
            await self._check_environments(conn, tid, plan)
            if plan.rejected and not skip_invalid:
                raise InvalidInput(
                    f"{len(plan.rejected)} item(s) cannot be migrated; nothing was written "
                    "(see errors, or send skip_invalid=true to migrate the rest)",
                    errors=[
                        FieldError(f"{r.key}{r.pointer}", r.reason)
                        for r in plan.rejected[:MAX_REPORTED]
                    ],
                )
            async with conn.transaction():
                job = await jobs_store.create_job(conn, tid, KIND, plan.counts())
        task = asyncio.create_task(self._run(tenant_id, job.id, plan))
        self._running[job.id] = task
        task.add_done_callback(lambda _: self._running.pop(job.id, None))
        return job

    async def get(self, tenant_id: uuid.UUID, job_id: str) -> MigrationJob:
        jid = parse_uuid(job_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn:
            job = await jobs_store.get_job(conn, tenant_id, jid)
        if job is None:
            raise NotFound(f"migration {job_id} not found")
        return job

    async def wait(self, job_id: str) -> None:
        """Until the job's background run (if any in this process) has ended."""
        task = self._running.get(job_id)
        if task is not None:
            await asyncio.wait({task})

    async def rollback(self, tenant_id: uuid.UUID, job_id: str) -> MigrationJob:
        tid, jid = tenant_id, parse_uuid(job_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            job = await jobs_store.get_job(conn, tid, jid, for_update=True)
            if job is None:
                raise NotFound(f"migration {job_id} not found")
            if job.status != "completed":
                raise Conflict(f"migration {job_id} is {job.status}; only a completed one rolls back")
            counts = await apply.undo(conn, tid, jid)
            await jobs_store.update_job(conn, jid, status="rolled_back")
        await self._emit(tenant_id, "migration.rolled_back", job_id, counts)
        return await self.get(tenant_id, job_id)

    @asynccontextmanager
    async def _owning(self, job_id: str, *, wait: bool) -> AsyncIterator[bool]:
        """Hold the job's lock while inside; yields False if another process holds it."""
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                key = (_LOCK_CLASS, job_id)
                if wait:
                    await conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
                    got = True
                else:
                    cur = await conn.execute(
                        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", key
                    )
                    row = await cur.fetchone()
                    got = bool(row and row[0])
                try:
                    yield got
                finally:
                    if got:
                        await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
            finally:
                await conn.set_autocommit(False)

    async def _run(self, tenant_id: uuid.UUID, job_id: str, plan: BrowserPlan) -> None:
        async with wrap_db_errors(), self._owning(job_id, wait=True):
            await self._carry_out(tenant_id, job_id, plan)

    async def _carry_out(self, tenant_id: uuid.UUID, job_id: str, plan: BrowserPlan) -> None:
        tid, jid = tenant_id, uuid.UUID(job_id)
        done = {name: 0 for _, name in PHASES}
        outcome: dict[str, dict[str, int]] = {name: {} for _, name in PHASES}
        total = plan.counts()
        env_ids: dict[str, str] = {}
        try:
            async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
                await jobs_store.update_job(conn, jid, status="running")
            async with wrap_db_errors(), self.pool.connection() as conn:
                known = await jobs_store.sources(
                    conn, tid, "environment", [t.environment_source or "" for t in plan.tasks]
                )
                env_ids.update({k: v.row_id for k, v in known.items()})
            for entity, name in PHASES:
                for batch in _batches(getattr(plan, name), self.batch_size):
                    async with (
                        wrap_db_errors(),
                        self.pool.connection() as conn,
                        conn.transaction(),
                    ):
                        result = await apply.apply_batch(
                            conn, tid, jid, entity, batch, env_ids=env_ids, embed=self._embed
                        )
                        done[name] += len(batch)
                        for action, n in result.counts.items():
                            outcome[name][action] = outcome[name].get(action, 0) + n
                        await jobs_store.update_job(conn, jid, done=done, outcome=outcome)
                    await self._emit(
                        tenant_id, "migration.progress", job_id,
                        {"entity": name, "done": done[name], "total": total[name],
                         "done_all": sum(done.values()), "total_all": sum(total.values())},
                    )
            async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
                await jobs_store.update_job(conn, jid, status="completed", finished=True)
            await self._emit(tenant_id, "migration.completed", job_id, {"outcome": outcome})
        except BaseException as exc:
            await asyncio.shield(self._fail(tenant_id, job_id, exc))
            if not isinstance(exc, Exception):
                raise

    async def _fail(self, tenant_id: uuid.UUID, job_id: str, exc: BaseException) -> None:
        """Undo everything the job wrote, then record why it failed."""
        tid, jid = tenant_id, uuid.UUID(job_id)
        if isinstance(exc, MemoryServiceError):
            reason = exc.detail
        elif isinstance(exc, asyncio.CancelledError):
            reason = "the service stopped during the migration"
        else:
            reason = "an internal error (logged with the migration id)"
        log.warning("migration %s failed and is rolled back: %s", job_id, reason, exc_info=exc)
        try:
            async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
                await apply.undo(conn, tid, jid)
                await jobs_store.update_job(
                    conn, jid, status="failed", finished=True,
                    errors=[{"reason": f"{reason}; everything the migration wrote was undone"}],
                )
        except Exception:
            log.exception("migration %s could not be rolled back", job_id)
            return
        await self._emit(tenant_id, "migration.failed", job_id, {"reason": str(reason)})

    async def recover(self) -> None:
        """Undo the jobs a stopped process left unfinished (run once at start-up)."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            left = await jobs_store.unfinished_jobs(conn)
        for tenant_id, job_id in left:
            async with wrap_db_errors(), self._owning(job_id, wait=False) as orphaned:
                if orphaned:
                    await self._fail(
                        tenant_id, job_id, Unavailable("the service stopped mid-migration")
                    )

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running.values()), timeout=30)

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await self.embedder.embed_async(texts)

    async def _emit(
        self, tenant_id: uuid.UUID, kind: str, job_id: str, attributes: dict[str, Any]
    ) -> None:
        severity = "warn" if kind == "migration.failed" else "info"
        await self.events.emit(
            tenant_id, kind, severity=severity, attributes={"migration_id": job_id, **attributes}
        )


def _batches(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _report(plan: BrowserPlan, actions: dict[str, dict[str, int]]) -> MigrationReport:
    return MigrationReport(
        valid=not plan.rejected,
        counts=plan.counts(),
        actions=actions,
        rejected=plan.rejected[:MAX_REPORTED],
        ignored_keys=plan.ignored_keys,
        rejected_total=len(plan.rejected),
    )
