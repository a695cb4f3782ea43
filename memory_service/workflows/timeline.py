"""Each workflow run is an execution; each completed step becomes one of its steps.

The run's execution is created before the run's row (its id goes into the run),
and every completion gets its place in the timeline (``timeline_seq``) inside
the completing transition. Appending happens after commit, under a per-run lock,
with ``seq`` set on every appended step: a crash between the commit and the
append leaves the step marked unappended, and the driver's catch-up appends it
later; an append whose reply was lost is a conflict on ``seq``, recognised by
the execution's head, so no workflow step is ever appended twice. A completion's
append waits ``APPEND_DELAY_S`` for the run's next steps to join it. The catch-up
looks only at steps completed (and runs finished) ``CATCH_UP_GRACE_S`` ago or
more. The execution's state maps each completed step id to its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import Conflict, MemoryServiceError, Unavailable
from memory_service.executions import ExecutionChanges, ExecutionService, NewExecution, NewStep
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.supervisor import Loop, Supervisor
from memory_service.workflows import repository as repo
from memory_service.workflows.models import Run, Step

log = logging.getLogger(__name__)
FINAL_STATUS = {"completed": "succeeded", "failed": "failed", "cancelled": "cancelled"}
CATCH_UP_BATCH = 50
# the catch-up takes what the follower missed (a crash between commit and append), not
# what it is about to append: under load that was the same work twice, run by run
CATCH_UP_GRACE_S = 2.0
# how long a completion's append waits for more of its run's steps: the appends of a run
# whose steps follow each other quickly become one, and stay off the CPU while the next
# step is claimed and answered (measured on two cores: 4.3 -> 2.4 ms from a claim's
# commit to the worker holding the answer, for a chain run by idle workers)
APPEND_DELAY_S = 0.05


class RunTimeline:
    def __init__(
        self, pool: AsyncConnectionPool, executions: ExecutionService, supervisor: Supervisor
    ) -> None:
        self.pool = pool
        self.executions = executions
        self._supervisor = supervisor
        self._behind: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: Loop | None = None

    def start(self) -> None:
        self._loop = self._supervisor.spawn("workflow-timeline", self._follow)

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    def touched(self, run_ids: set[str]) -> None:
        """Runs whose transition just committed; appended in the background, so a
        worker's completion never waits for the execution, and a run's steps that
        complete close together go into one append."""
        if self._loop is None:
            return
        self._behind |= run_ids
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(APPEND_DELAY_S)  # let the run's next steps join this append
            self._wake.clear()
            batch, self._behind = sorted(self._behind), set()
            for run_id in batch:
                try:
                    await self.sync(run_id)
                except Exception:  # the driver's catch-up retries whatever is left
                    log.exception("appending run %s to its execution failed", run_id)

    async def create(self, tenant_id: uuid.UUID, run_id: str, workflow: str) -> str:
        execution = await self.executions.create(
            tenant_id,
            NewExecution(metadata={"workflow": workflow, "workflow_run_id": run_id}),
        )
        return execution.id

    async def continue_in_fork(self, tenant_id: uuid.UUID, run_id: str, execution_id: str) -> str:
        """The execution a retried run records its next steps in: a fork of its own at its
        head, since a finished execution takes no more steps. The first gets the steps
        still waiting for their append, then is closed as failed (if the timeline had not
        closed it yet), so it stays as the run left it."""
        await self.sync(run_id)
        with contextlib.suppress(Conflict):  # finished already
            failed = ExecutionChanges(status="failed")
            await self.executions.update(tenant_id, execution_id, failed, None)
        head = (await self.executions.get(tenant_id, execution_id)).head_seq
        return (await self.executions.fork(tenant_id, execution_id, head)).id

    async def sync(self, run_id: str) -> None:
        """Append the run's completed steps that its execution lacks; close it when done."""
        try:
            # pipelined, as a transition is: the lock and the marks need no round trip
            async with (
                wrap_db_errors(),
                self.pool.connection() as conn,
                conn.pipeline(),
                conn.transaction(),
            ):
                await repo.lock_timeline(conn, run_id)
                # the run row first, then its steps: the order every transition takes them
                # in, so marking steps appended never deadlocks with a completion
                run = await repo.get_run(conn, None, run_id, lock=True)
                if run is None or run.execution_id is None:
                    return
                steps = await repo.unappended(conn, run_id)
                closing = run.status != "running" and not run.timeline_closed
                try:
                    if steps:
                        await self._append(run, run.execution_id, steps)
                    if closing:
                        changes = ExecutionChanges(status=FINAL_STATUS[run.status])
                        await self.executions.update(run.tenant_id, run.execution_id, changes, None)
                except Conflict as exc:
                    # the execution was finished (or written) through the executions API:
                    # it takes nothing more, so the run stops recording there instead of
                    # failing here on every pass
                    log.warning(
                        "workflow run %s: its execution %s takes no more steps (%s); the run "
                        "goes on without recording there", run_id, run.execution_id, exc.detail,
                    )
                    closing = True
                if steps:
                    await repo.mark_appended(conn, [s.row for s in steps])
                if closing:
                    await repo.close_timeline(conn, run_id)
        except Unavailable as exc:
            log.info("workflow timeline of run %s waits: %s", run_id, exc.detail)

    async def catch_up(self) -> int:
        async with wrap_db_errors(), self.pool.connection() as conn:
            behind = await repo.timelines_behind(conn, CATCH_UP_BATCH, CATCH_UP_GRACE_S)
        for run_id in behind:
            try:
                await self.sync(run_id)
            except MemoryServiceError as exc:  # one run's trouble holds up no other run
                log.error("appending run %s to its execution failed: %s", run_id, exc.detail)
        return len(behind)

    async def _append(self, run: Run, execution_id: str, steps: list[Step]) -> None:
        batch = [_execution_step(run, s) for s in steps]
        try:
            await self.executions.append_steps(run.tenant_id, execution_id, batch)
        except Conflict:
            # an earlier append went through but its mark was lost: skip what is there
            head = (await self.executions.get(run.tenant_id, execution_id)).head_seq
            rest = [s for s in batch if s.seq is not None and s.seq > head]
            if rest:
                await self.executions.append_steps(run.tenant_id, execution_id, rest)
        except Unavailable:
            raise
        except MemoryServiceError as exc:  # e.g. a state over the execution's size limit
            log.error("run %s: steps not added to its execution: %s", run.id, exc.detail)


def _execution_step(run: Run, step: Step) -> NewStep:
    path = "/" + step.step_id.replace("~", "~0").replace("/", "~1")
    return NewStep(
        kind="workflow_step",
        name=step.step_id,
        input=step.input,
        output=step.output,
        metadata={"workflow_run_id": run.id, "kind": step.kind, "attempts": step.attempts},
        state_patch=[{"op": "add", "path": path, "value": step.output}],
        ended_at=step.completed_at,
        seq=step.timeline_seq,
    )
