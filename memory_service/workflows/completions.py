"""Completions that arrive together commit together (group commit).

While one batch of completions is being settled, the completions that arrive
meanwhile queue up, and the next batch takes all of them (up to ``max_batch``)
in ONE transaction: the attempts are read in one statement, their runs and
steps locked in one statement each (in id order, so batches never deadlock),
the attempts finished and the outputs recorded in one statement each, the runs'
completed counts moved and the followers' pending dependencies released in one
statement each, and the claims of complete-and-claim requests sent together;
then one commit. A completion that finds nothing in flight starts a batch of
one at once: no timer, a lone request waits for nobody.

Each completion is checked on its own (the tenant, the lease token, the attempt
still current, the lease not run out): one that fails gets its own ``NotFound``
or ``Conflict`` and changes nothing, while the others of the batch commit. If
the batch's transaction fails as a whole (a database error), every completion
of it is settled again alone, so that one bad completion cannot fail the
others; only when the database is away (``Unavailable``) does the whole batch
get that answer at once, each completion unacknowledged and safe to retry.
Each statement names its rows by primary key, taken from attempts looked up
with their own request's tenant, so a batch may mix tenants safely; the
progress events are staged per tenant, in the order of their causes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from memory_service.errors import Conflict, FieldError, NotFound, Unavailable
from memory_service.workflows import engine
from memory_service.workflows import repository as repo
from memory_service.workflows.definitions import iter_refs, ref_step
from memory_service.workflows.models import Attempt, Run, Step
from memory_service.workflows.refs import RefError, resolve
from memory_service.workflows.service import WorkflowService
from memory_service.workflows.transition import Transition

log = logging.getLogger(__name__)
MAX_BATCH = 64
_OWN_ACTIVATION = ("map", "sleep", "wait_for_signal")  # activated by ``engine.activate``


@dataclass(frozen=True, slots=True)
class NextClaim:
    """What a worker completing an attempt claims next (``worker_id``: the attempt's
    worker when None)."""

    queues: list[str]
    max_steps: int = 1
    lease_s: float = 30.0
    wait_s: float = 0.0
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    worker_id: str  # who claims next: the claim's worker, else the attempt's
    claimed: list[Attempt]


@dataclass(eq=False)
class Completion:
    tenant_id: uuid.UUID | None
    attempt_id: str
    token: str
    output: Any
    then_claim: NextClaim | None = None
    result: Settled | None = None
    error: Exception | None = None
    future: asyncio.Future[Settled] | None = field(default=None, repr=False)


class CompletionBatcher:
    def __init__(self, service: WorkflowService, *, max_batch: int = MAX_BATCH) -> None:
        self.service = service
        self.max_batch = max_batch
        self._waiting: list[Completion] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # transactions the completions took
        self.completions = 0
        self.fallbacks = 0  # batches whose transaction failed, settled one by one

    async def complete(self, item: Completion) -> Settled:
        item.future = asyncio.get_running_loop().create_future()
        self._waiting.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await item.future

    async def _drain(self) -> None:
        batch: list[Completion] = []
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                batch = [c for c in batch if c.future is not None and not c.future.done()]
                if batch:
                    await self._settle(batch)
                batch = []
        finally:  # cancelled (shutdown): nobody may wait for an answer that never comes
            self._task = None
            for item in batch + self._waiting:
                if item.future is not None and not item.future.done():
                    item.future.cancel()
            self._waiting = []

    async def _settle(self, batch: list[Completion]) -> None:
        self.batches += 1
        self.completions += len(batch)
        try:
            async with self.service.transition() as tx:
                await settle(tx, batch)
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, Unavailable):
                # the database away (or the pool out of connections) fails each alike:
                # settling them one by one would wait for it once per completion
                for item in batch:
                    item.error, item.result = exc, None
            else:
                self.fallbacks += 1
                log.warning(
                    "a batch of %d completions failed (%r); settling each alone", len(batch), exc
                )
                for item in batch:
                    item.error = item.result = None
                    try:
                        async with self.service.transition() as tx:
                            await settle(tx, [item])
                    except Exception as one:
                        item.error, item.result = one, None
        for item in batch:
            assert item.future is not None
            if item.future.done():
                continue
            if item.error is not None:
                item.future.set_exception(item.error)
            else:
                assert item.result is not None
                item.future.set_result(item.result)


async def settle(tx: Transition, batch: list[Completion]) -> None:
    """Settle ``batch`` in ``tx``: each completion gets its ``result`` or its ``error``."""
    if len(batch) == 1:
        await _settle_one(tx, batch[0])
        return
    conn = tx.conn
    looked_up = await repo.attempt_rows(conn, [(c.attempt_id, c.tenant_id) for c in batch])
    rows = {id(c): row for c, row in zip(batch, looked_up, strict=True) if row is not None}
    found = [c for c in batch if id(c) in rows]
    for c in batch:
        if id(c) not in rows:
            c.error = NotFound(f"attempt {c.attempt_id} does not exist")
    if not found:
        return
    runs = await repo.lock_runs(conn, sorted({str(rows[id(c)]["run_id"]) for c in found}))
    steps = await repo.lock_steps(conn, sorted({str(rows[id(c)]["step_row"]) for c in found}))
    settled: list[tuple[Completion, Run, Step]] = []
    seen: set[str] = set()
    for c in found:
        row = rows[id(c)]
        step = steps.get(str(row["step_row"]))
        try:
            check_current(row, step, c.token)
            if c.attempt_id in seen:
                raise Conflict("the attempt is already completed")
        except Conflict as exc:
            c.error = exc
            continue
        assert step is not None
        seen.add(c.attempt_id)
        settled.append((c, runs[str(row["run_id"])], step))
    if not settled:
        return
    await repo.finish_attempts(conn, [c.attempt_id for c, _, _ in settled])
    top = [(c, run, step) for c, run, step in settled if step.parent_step is None]
    if top:
        await _complete_top_level(tx, top)
    for c, run, step in settled:
        if step.parent_step is not None:  # a map's item: its parent may complete too
            await engine.complete_step(tx, run, step, c.output)
    claims = [(c, c.then_claim) for c, _, _ in settled if c.then_claim is not None]
    claimed = await repo.claim_many(
        conn,
        [(c.tenant_id, n.queues, n.max_steps, n.lease_s, _worker(c, rows)) for c, n in claims],
    )
    by_item = {id(c): got for (c, _), got in zip(claims, claimed, strict=True)}
    for c, _, _ in settled:
        got = by_item.get(id(c), [])
        announce_claims(tx, got)
        c.result, c.error = Settled(_worker(c, rows), got), None


async def _settle_one(tx: Transition, c: Completion) -> None:
    """A completion alone: the row-at-a-time statements, pipelined, which take fewer
    round trips than the batch's set-based stages (a lone step's latency is theirs)."""
    conn = tx.conn
    row = await repo.attempt_row(conn, c.tenant_id, c.attempt_id)
    if row is None:
        c.error = NotFound(f"attempt {c.attempt_id} does not exist")
        return
    run = await repo.get_run(conn, None, str(row["run_id"]), lock=True)
    step = await repo.get_step(conn, str(row["step_row"]))
    try:
        check_current(row, step, c.token)
    except Conflict as exc:
        c.error = exc
        return
    assert run is not None and step is not None
    await repo.finish_attempt(conn, c.attempt_id, "completed")
    await engine.complete_step(tx, run, step, c.output)
    got: list[Attempt] = []
    worker = _worker(c, {id(c): row})
    if c.then_claim is not None:
        n = c.then_claim
        got = await repo.claim(conn, c.tenant_id, n.queues, n.max_steps, n.lease_s, worker)
        announce_claims(tx, got)
    c.result, c.error = Settled(worker, got), None


def _worker(c: Completion, rows: dict[int, dict[str, Any]]) -> str:
    chosen = c.then_claim.worker_id if c.then_claim is not None else None
    return chosen or str(rows[id(c)]["worker_id"])


async def _complete_top_level(tx: Transition, done: list[tuple[Completion, Run, Step]]) -> None:
    """``engine.complete_step`` for top-level steps, a statement for all of them at a time."""
    conn = tx.conn
    await repo.complete_steps(conn, [(step, c.output) for c, _, step in done])
    for c, run, step in done:
        step.status, step.output = "completed", c.output
        step.error = step.lease_expires_at = None
        tx.emit("workflow.step.completed", run, step, attempt=step.attempts or None)
    timed = [(run.id, step.row) for _, run, step in _timed(done)]
    if timed:
        seqs = await repo.assign_timeline_seqs(conn, timed)
        for (_, run, step), seq in zip(_timed(done), seqs, strict=True):
            step.timeline_seq = seq
            tx.timelines.add(run.id)
    deltas: dict[str, int] = {}
    for _, run, _ in done:
        deltas[run.id] = deltas.get(run.id, 0) + 1
    counts = await repo.count_completed_many(conn, deltas)
    runs = {run.id: run for _, run, _ in done}
    for run_id, run in runs.items():
        run.steps_completed = counts[run_id]
        if run.steps_completed >= run.steps_total:
            output = await repo.sink_outputs(conn, run.id)
            await repo.set_run(conn, run.id, "completed", output=output)
            run.status, run.output = "completed", output
            tx.emit("workflow.run.completed", run)
            tx.timelines.add(run.id)
    moving = [(run.id, step.step_id) for _, run, step in done if run.status == "running"]
    if not moving:
        return
    released = await repo.release_dependents_many(conn, moving)
    await _activate_all(
        tx, runs, [f for f in released if f.pending_deps == 0 and f.status == "pending"]
    )


def _timed(done: list[tuple[Completion, Run, Step]]) -> list[tuple[Completion, Run, Step]]:
    return [d for d in done if d[1].execution_id is not None]  # runs with an execution


async def _activate_all(tx: Transition, runs: dict[str, Run], steps: list[Step]) -> None:
    """``engine.activate`` for each step; task steps (most) with one read of the outputs
    their inputs refer to and one write for all of them."""
    tasks = [s for s in steps if s.kind not in _OWN_ACTIVATION]
    wanted = {
        s.row: sorted({i for r in iter_refs(s.spec["input"]) if (i := ref_step(r))}) for s in tasks
    }
    pairs = sorted({(s.run_id, sid) for s in tasks for sid in wanted[s.row]})
    found = await repo.outputs_many(tx.conn, pairs) if pairs else {}
    ready: list[tuple[Step, Any]] = []
    unresolved: list[tuple[Step, RefError]] = []
    for s in tasks:
        outputs = {
            i: {"output": found[(s.run_id, i)]} for i in wanted[s.row] if (s.run_id, i) in found
        }
        try:
            ready.append(
                (s, resolve(s.spec["input"], {"input": runs[s.run_id].input, "steps": outputs}))
            )
        except RefError as exc:
            unresolved.append((s, exc))
    if ready:
        await repo.make_ready(tx.conn, ready)
        for s, _ in ready:
            tx.emit("workflow.step.ready", runs[s.run_id], s, queue=s.queue)
            tx.wake_step(s)
    # after the others are ready, as one by one: a failing run cancels them
    for s, why in unresolved:
        await engine.fail_step(tx, runs[s.run_id], s, str(why), retryable=False)
    for s in steps:
        if s.kind in _OWN_ACTIVATION:
            await engine.activate(tx, runs[s.run_id], s)


def announce_claims(tx: Transition, claimed: list[Attempt]) -> None:
    for a in claimed:
        tx.took(a.tenant_id, a.queue)
        tx.emit_for(
            "workflow.step.claimed",
            a.tenant_id,
            a.run_id,
            a.workflow,
            a.execution_id,
            step_id=a.step_id,
            kind=a.kind,
            attempt=a.number,
            worker_id=a.worker_id,
        )


def check_current(row: dict[str, Any], step: Step | None, token: str) -> None:
    if str(row["lease_token"]) != token:
        raise Conflict(
            "the lease token does not match this attempt",
            errors=[FieldError("lease_token", "stale or wrong")],
        )
    if row["status"] != "running":
        raise Conflict(f"the attempt is already {row['status']}")
    if step is None or step.current_attempt != str(row["id"]) or step.status != "running":
        raise Conflict("the attempt is no longer current: its step moved on")
    if row["expired"]:
        raise Conflict("the attempt's lease ran out; the step goes back to the queue")
