"""Workflows (definitions and runs) and workers (claims and attempts) as call builders."""

from __future__ import annotations

from typing import Any

from memory_service_client._core import Call, body, operation, query, segment

_W, _R, _A = "/v1/workflows", "/v1/workflow-runs", "/v1/workers/attempts"


@operation("PUT", _W + "/{name}")
def put_workflow(name: str, definition: dict[str, Any]) -> Call:
    """Store a definition (``{"steps": [...]}``); a changed one is a new version."""
    return Call("PUT", f"{_W}/{segment(name)}", json=definition)


@operation("GET", _W)
def list_workflows(*, limit: int | None = None, cursor: str | None = None) -> Call:
    return Call("GET", _W, query(limit=limit, cursor=cursor))


@operation("GET", _W + "/{name}")
def get_workflow(name: str) -> Call:
    return Call("GET", f"{_W}/{segment(name)}")


@operation("GET", _W + "/{name}/versions/{version}")
def get_workflow_version(name: str, version: int) -> Call:
    return Call("GET", f"{_W}/{segment(name)}/versions/{int(version)}")


@operation("POST", _W + "/{name}/runs")
def start_run(
    name: str,
    input: Any = None,
    *,
    idempotency_key: str | None = None,
    version: int | None = None,
) -> Call:
    """Start a run; with an ``idempotency_key`` a repeat answers the same run, so a
    keyed start is safe to retry."""
    payload = {"input": input, **body(idempotency_key=idempotency_key, version=version)}
    return Call("POST", f"{_W}/{segment(name)}/runs", json=payload)


@operation("GET", _R)
def list_runs(*, limit: int | None = None, cursor: str | None = None, **filters: Any) -> Call:
    """``filters``: workflow, status."""
    return Call("GET", _R, query(limit=limit, cursor=cursor, **filters))


@operation("GET", _R + "/{run_id}")
def get_run(run_id: str) -> Call:
    return Call("GET", f"{_R}/{segment(run_id)}")


@operation("POST", _R + "/{run_id}/cancel")
def cancel_run(run_id: str) -> Call:
    return Call("POST", f"{_R}/{segment(run_id)}/cancel")


@operation("POST", _R + "/{run_id}/retry")
def retry_run(run_id: str) -> Call:
    return Call("POST", f"{_R}/{segment(run_id)}/retry")


@operation("POST", _R + "/{run_id}/fork")
def fork_run(run_id: str, from_step: str, input_patch: dict[str, Any] | None = None) -> Call:
    payload = body(from_step=from_step, input_patch=input_patch)
    return Call("POST", f"{_R}/{segment(run_id)}/fork", json=payload)


@operation("POST", _R + "/{run_id}/signals/{name}")
def signal_run(run_id: str, name: str, payload: Any = None) -> Call:
    return Call("POST", f"{_R}/{segment(run_id)}/signals/{segment(name)}", json={"payload": payload})


@operation("POST", "/v1/workers/claim")
def claim(
    worker_id: str,
    queues: list[str],
    *,
    max_steps: int = 1,
    lease_s: float = 30.0,
    wait_s: float = 0.0,
) -> Call:
    """Long-poll for up to ``max_steps`` attempts; ``None`` (204) when none came."""
    payload = {
        "worker_id": worker_id, "queues": queues, "max_steps": max_steps,
        "lease_s": lease_s, "wait_s": wait_s,
    }
    return Call("POST", "/v1/workers/claim", json=payload)


@operation("POST", _A + "/{attempt_id}/heartbeat")
def heartbeat(attempt_id: str, lease_token: str, lease_s: float = 30.0) -> Call:
    payload = {"lease_token": lease_token, "lease_s": lease_s}
    return Call("POST", f"{_A}/{segment(attempt_id)}/heartbeat", json=payload)


@operation("POST", _A + "/{attempt_id}/complete")
def complete_attempt(
    attempt_id: str, lease_token: str, output: Any = None, claim: dict[str, Any] | None = None
) -> Call:
    """``claim`` (queues, max_steps, lease_s, wait_s, worker_id) also claims the next
    attempts; the answer's ``claimed`` lists them."""
    payload: dict[str, Any] = {"lease_token": lease_token, "output": output}
    if claim is not None:
        payload["claim"] = claim
    return Call("POST", f"{_A}/{segment(attempt_id)}/complete", json=payload)


@operation("POST", _A + "/{attempt_id}/fail")
def fail_attempt(attempt_id: str, lease_token: str, error: str, retryable: bool = True) -> Call:
    payload = {"lease_token": lease_token, "error": error, "retryable": retryable}
    return Call("POST", f"{_A}/{segment(attempt_id)}/fail", json=payload)
