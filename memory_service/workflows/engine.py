"""The run state machine: how a step becomes ready, completes, fails, retries and fans out.

Every function here works inside one ``Transition`` (one transaction) and holds
the run's row lock, so the steps of one run change one transition at a time
while different runs proceed in parallel. A step is ``pending`` until its last
dependency completes; activation resolves its input and makes it ``ready`` (a
worker or the driver claims it), ``scheduled`` (a durable timer: ``sleep``, or
``wait_for_signal`` with its timeout) or, for ``map``, ``running`` while its
children work. A failure within the retry budget makes the step ready again
after exponential backoff; past it the step fails and so does the run, and the
run's other active steps are cancelled (``retry`` resumes exactly those).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from memory_service.workflows import repository as repo
from memory_service.workflows.definitions import MAX_SLEEP_S, iter_refs, ref_step
from memory_service.workflows.models import Run, Step
from memory_service.workflows.refs import RefError, resolve
from memory_service.workflows.statements import NOW, DbClock
from memory_service.workflows.transition import DRIVER, Transition

MAX_MAP_ITEMS = 1000


async def activate(tx: Transition, run: Run, step: Step) -> None:
    """A step whose dependencies are done: resolve its input and hand it to its runner."""
    try:
        if step.parent_step is None:
            context = await _context(tx, run, step.spec)
            step_input = resolve(step.spec["input"], context)
        else:
            context, step_input = {}, step.input  # a map child's input is resolved at fan-out
        if step.kind == "map":
            await _fan_out(tx, run, step, resolve(step.spec["over"], context), context)
        elif step.kind == "sleep":
            await _schedule(tx, run, step, step_input, _sleep_seconds(step_input))
        elif step.kind == "wait_for_signal":
            await _wait_for_signal(tx, run, step, step_input)
        else:
            await repo.update_step(
                tx.conn, step, status="ready", input=step_input, available_at=NOW
            )
            tx.emit("workflow.step.ready", run, step, queue=step.queue)
            tx.wake_step(step)
    except RefError as exc:
        await fail_step(tx, run, step, str(exc), retryable=False)


async def _context(tx: Transition, run: Run, *templates: Any) -> dict[str, Any]:
    wanted = sorted({sid for t in templates for r in iter_refs(t) if (sid := ref_step(r))})
    found = await repo.outputs(tx.conn, run.id, wanted) if wanted else {}
    return {"input": run.input, "steps": {sid: {"output": out} for sid, out in found.items()}}


def _sleep_seconds(step_input: Any) -> float:
    seconds = step_input.get("seconds") if isinstance(step_input, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise RefError("a sleep step needs input {'seconds': number}")
    if not 0 < seconds <= MAX_SLEEP_S:
        raise RefError(f"a sleep lasts above 0 and at most {MAX_SLEEP_S} seconds, not {seconds}")
    return float(seconds)


async def _schedule(
    tx: Transition, run: Run, step: Step, step_input: Any, delay_s: float | None
) -> None:
    """A durable timer: the row itself says when the step is due."""
    due = None if delay_s is None else await tx.now() + timedelta(seconds=delay_s)
    await repo.update_step(tx.conn, step, status="scheduled", input=step_input, available_at=due)
    tx.emit("workflow.step.ready", run, step, due_at=due.isoformat() if due else None)
    tx.wake.add(DRIVER)


async def _wait_for_signal(tx: Transition, run: Run, step: Step, step_input: Any) -> None:
    name = step_input.get("signal") if isinstance(step_input, dict) else None
    if not isinstance(name, str) or not name:
        raise RefError("a wait_for_signal step needs input {'signal': name}")
    if step_input.get("on_timeout", "fail") not in ("fail", "continue"):
        raise RefError("on_timeout is 'fail' or 'continue'")
    arrived, payload = await repo.first_signal(tx.conn, run.id, name)
    if arrived:  # the signal came before the step was reached
        await repo.update_step(tx.conn, step, input=step_input)
        await complete_step(tx, run, step, {"signal": name, "payload": payload})
    else:
        await _schedule(tx, run, step, step_input, step.spec.get("timeout_s"))


async def _fan_out(
    tx: Transition, run: Run, step: Step, items: Any, context: dict[str, Any]
) -> None:
    if not isinstance(items, list):
        raise RefError(f"map step {step.step_id!r}: 'over' must resolve to a list")
    if len(items) > MAX_MAP_ITEMS:
        raise RefError(f"map step {step.step_id!r}: at most {MAX_MAP_ITEMS} items")
    child = step.spec["step"]
    context.update(await _context(tx, run, child["input"]))
    rows = []
    for index, item in enumerate(items):
        child_input = resolve(child["input"], {**context, "item": item, "index": index})
        rows.append(
            {
                "step_id": f"{step.step_id}[{index}]",
                "parent_step": step.step_id,
                "item_index": index,
                "position": step.position,
                "kind": child["kind"],
                "queue": child["queue"],
                "spec": {**child, "input": None},
                "input": child_input,
            }
        )
    await repo.update_step(tx.conn, step, status="running", children_left=len(items))
    tx.emit("workflow.step.ready", run, step, items=len(items))
    if not items:
        await complete_step(tx, run, step, [])
        return
    for child_step in await repo.insert_steps(tx.conn, run.tenant_id, run.id, rows):
        await activate(tx, run, child_step)


async def complete_step(tx: Transition, run: Run, step: Step, output: Any) -> None:
    """Record the step's one output and move the run on."""
    await repo.update_step(
        tx.conn,
        step,
        status="completed",
        output=output,
        completed_at=NOW,
        lease_expires_at=None,
        error=None,
    )
    tx.emit("workflow.step.completed", run, step, attempt=step.attempts or None)
    if run.execution_id is not None:
        step.timeline_seq = await repo.assign_timeline_seq(tx.conn, run.id, step.row)
        tx.timelines.add(run.id)
    if step.parent_step is not None:
        parent = await repo.parent_step(tx.conn, run.id, step.parent_step)
        assert parent is not None
        if parent.status == "running" and not await repo.unfinished_children(
            tx.conn, run.id, parent.step_id
        ):
            await complete_step(
                tx, run, parent, await repo.child_outputs(tx.conn, run.id, parent.step_id)
            )
        return
    run.steps_completed = await repo.count_completed(tx.conn, run.id, 1)
    if run.steps_completed >= run.steps_total:
        output = await repo.sink_outputs(tx.conn, run.id)
        await repo.set_run(tx.conn, run.id, "completed", output=output)
        run.status, run.output = "completed", output
        tx.emit("workflow.run.completed", run)
        tx.timelines.add(run.id)
        return
    for follower in await repo.release_dependents(tx.conn, run.id, step.step_id):
        if follower.pending_deps == 0 and follower.status == "pending":
            await activate(tx, run, follower)


def backoff(step: Step) -> float:
    retry = step.spec["retry"]
    return float(
        min(retry["backoff_s"] * 2 ** max(step.budget_used - 1, 0), retry["max_backoff_s"])
    )


async def fail_step(tx: Transition, run: Run, step: Step, error: str, *, retryable: bool) -> None:
    """Retry after backoff while attempts remain; otherwise the step and the run fail."""
    error = error[:4000]
    if retryable and step.budget_used < step.max_attempts:
        delay = backoff(step)
        await repo.update_step(
            tx.conn,
            step,
            status="ready",
            error=error,
            current_attempt=None,
            lease_expires_at=None,
            available_at=DbClock(delay),
        )
        tx.emit(
            "workflow.step.retrying",
            run,
            step,
            severity="warn",
            attempt=step.attempts,
            delay_s=delay,
            error=error,
        )
        tx.wake_step(step)
        return
    await repo.update_step(
        tx.conn, step, status="failed", error=error, lease_expires_at=None, current_attempt=None
    )
    tx.emit(
        "workflow.step.failed",
        run,
        step,
        severity="error",
        attempt=step.attempts or None,
        error=error,
    )
    if step.parent_step is not None:
        parent = await repo.parent_step(tx.conn, run.id, step.parent_step)
        if parent is not None and parent.status == "running":
            await fail_step(
                tx, run, parent, f"item {step.item_index} failed: {error}", retryable=False
            )
        return
    await fail_run(tx, run, f"step {step.step_id!r} failed: {error}")


async def fail_run(tx: Transition, run: Run, error: str) -> None:
    if run.status != "running":
        return
    await _stop_active(tx, run, ("ready", "running", "scheduled"))
    await repo.set_run(tx.conn, run.id, "failed", error=error)
    run.status, run.error = "failed", error
    tx.emit("workflow.run.failed", run, severity="error", error=error)
    tx.timelines.add(run.id)


async def cancel_run(tx: Transition, run: Run) -> None:
    await _stop_active(tx, run, ("pending", "ready", "running", "scheduled"))
    await repo.set_run(tx.conn, run.id, "cancelled")
    run.status = "cancelled"
    tx.emit("workflow.run.cancelled", run, severity="warn")
    tx.timelines.add(run.id)


async def _stop_active(tx: Transition, run: Run, statuses: tuple[str, ...]) -> None:
    """Cancel the run's unfinished steps; late completions of their attempts get 409."""
    await repo.cancel_attempts(tx.conn, run.id)
    for step in await repo.run_steps(tx.conn, run.id, lock=True):
        if step.status in statuses:
            await repo.update_step(
                tx.conn, step, status="cancelled", current_attempt=None, lease_expires_at=None
            )


async def retry_run(tx: Transition, run: Run) -> None:
    """Resume a failed run at its failed (and thereby cancelled) steps, with fresh budgets."""
    await repo.set_run(tx.conn, run.id, "running")
    run.status, run.error = "running", None
    tx.emit("workflow.run.started", run, retry=True)
    steps = await repo.run_steps(tx.conn, run.id, lock=True)
    fanned = {s.parent_step for s in steps if s.parent_step is not None}
    for step in steps:
        if step.status not in ("failed", "cancelled"):
            continue
        if step.kind == "map" and step.step_id in fanned:
            await repo.update_step(tx.conn, step, status="running", error=None)
            continue
        await repo.update_step(
            tx.conn, step, status="pending", retry_base=step.attempts, error=None
        )
        if step.pending_deps == 0:
            await activate(tx, run, step)


async def fire_timer(tx: Transition, run: Run, step: Step) -> None:
    """A due ``sleep`` completes; a ``wait_for_signal`` without its signal times out."""
    if step.kind == "sleep":
        await complete_step(tx, run, step, {"slept_s": step.input.get("seconds")})
        return
    name = step.input.get("signal")
    if step.input.get("on_timeout", "fail") == "continue":
        await complete_step(tx, run, step, {"signal": name, "payload": None, "timed_out": True})
    else:
        timeout = step.spec.get("timeout_s")
        await fail_step(
            tx, run, step, f"no signal {name!r} arrived within {timeout} s", retryable=False
        )


async def deliver_signal(tx: Transition, run: Run, name: str, payload: Any) -> int:
    """Store the signal (a later wait sees it too) and release the steps waiting for it."""
    await repo.insert_signal(tx.conn, run.tenant_id, run.id, name, payload)
    waiting = await repo.waiting_for(tx.conn, run.id, name)
    for step in waiting:
        if run.status == "running" and step.status == "scheduled":
            await complete_step(tx, run, step, {"signal": name, "payload": payload})
    return len(waiting)
