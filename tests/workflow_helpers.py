"""Helpers for workflow tests: definitions, a worker loop over HTTP, waiting for a run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

DIAMOND = {
    "steps": [
        {"id": "a", "kind": "task", "input": {"n": {"$ref": "input.n"}}},
        {
            "id": "b",
            "kind": "task",
            "depends_on": ["a"],
            "input": {"x": {"$ref": "steps.a.output.value"}, "op": "double"},
        },
        {
            "id": "c",
            "kind": "task",
            "depends_on": ["a"],
            "input": {"x": {"$ref": "steps.a.output.value"}, "op": "square"},
        },
        {
            "id": "d",
            "kind": "task",
            "depends_on": ["b", "c"],
            "input": {
                "left": {"$ref": "steps.b.output.value"},
                "right": {"$ref": "steps.c.output.value"},
                "op": "add",
            },
        },
        {
            "id": "e",
            "kind": "task",
            "depends_on": ["d"],
            "input": {"x": {"$ref": "steps.d.output.value"}, "op": "id"},
        },
    ]
}


def compute(step_input: dict[str, Any]) -> dict[str, Any]:
    """What the test worker does for the diamond's steps."""
    op = step_input.get("op")
    if op is None:
        return {"value": step_input["n"]}
    if op == "double":
        return {"value": step_input["x"] * 2}
    if op == "square":
        return {"value": step_input["x"] ** 2}
    if op == "add":
        return {"value": step_input["left"] + step_input["right"]}
    return {"value": step_input["x"]}


async def put_workflow(client: Any, headers: dict[str, str], body: dict[str, Any]) -> str:
    name = f"wf-{uuid.uuid4().hex[:8]}"
    r = await client.put(f"/v1/workflows/{name}", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return name


async def start(
    client: Any, headers: dict[str, str], name: str, run_input: Any, **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        f"/v1/workflows/{name}/runs", json={"input": run_input, **extra}, headers=headers
    )
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


async def claim(
    client: Any, headers: dict[str, str], queues: list[str] | None = None, **opts: Any
) -> list[dict[str, Any]]:
    body = {"worker_id": "test-worker", "queues": queues or ["default"], **opts}
    r = await client.post("/v1/workers/claim", json=body, headers=headers)
    assert r.status_code in (200, 204), r.text
    return [] if r.status_code == 204 else r.json()["items"]  # type: ignore[no-any-return]


async def complete(
    client: Any, headers: dict[str, str], attempt: dict[str, Any], output: Any
) -> Any:
    return await client.post(
        f"/v1/workers/attempts/{attempt['id']}/complete",
        json={"lease_token": attempt["lease_token"], "output": output},
        headers=headers,
    )


async def fail(
    client: Any,
    headers: dict[str, str],
    attempt: dict[str, Any],
    error: str,
    retryable: bool = True,
) -> Any:
    return await client.post(
        f"/v1/workers/attempts/{attempt['id']}/fail",
        json={"lease_token": attempt["lease_token"], "error": error, "retryable": retryable},
        headers=headers,
    )


async def run_state(client: Any, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/workflow-runs/{run_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def wait_for(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = await run_state(client, headers, run_id)
        if done(run):
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.05)


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


async def work_until(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    handler: Callable[[dict[str, Any]], Awaitable[Any] | Any] = compute,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Claim and complete steps with ``handler`` until the run has finished."""
    deadline = time.monotonic() + timeout
    while True:
        for attempt in await claim(client, headers, wait_s=0.3, max_steps=10):
            output = handler(attempt["input"])
            if asyncio.iscoroutine(output):
                output = await output
            r = await complete(client, headers, attempt, output)
            assert r.status_code == 200, r.text
        run = await run_state(client, headers, run_id)
        if run["status"] != "running":
            return run
        assert time.monotonic() < deadline, run
