"""Workflow definitions: validation that names the step at fault, and versions."""

from __future__ import annotations

from typing import Any

from conftest import assert_problem
from workflow_helpers import DIAMOND, put_workflow, start


def _steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps)}


async def test_invalid_definitions_name_the_step(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    cases = [
        (
            _steps(
                {"id": "a", "kind": "task", "depends_on": ["c"]},
                {"id": "b", "kind": "task", "depends_on": ["a"]},
                {"id": "c", "kind": "task", "depends_on": ["b"]},
            ),
            "a -> c -> b -> a",
        ),
        (_steps({"id": "a", "kind": "task", "depends_on": ["ghost"]}), "unknown step 'ghost'"),
        (
            _steps(
                {"id": "a", "kind": "task"},
                {"id": "b", "kind": "task", "input": {"x": {"$ref": "steps.a.output.y"}}},
            ),
            "step 'b' refers to 'steps.a.output.y', but step 'a' is not upstream",
        ),
        (_steps({"id": "a", "kind": "teleport"}), "step 'a' has unknown kind 'teleport'"),
        (_steps({"id": "a", "kind": "task"}, {"id": "a", "kind": "task"}), "defined twice"),
        (_steps({"id": "m", "kind": "map", "over": [1]}), "map step 'm'"),
        (_steps({"id": "a", "kind": "task", "retry": {"max_attempts": 0}}), "max_attempts"),
    ]
    nap = {"id": "nap", "kind": "sleep"}
    durations = [
        ({**nap, "input": {"seconds": -1}}, "steps[0].input.seconds"),
        ({**nap, "input": {"seconds": 1e308}}, "steps[0].input.seconds"),
        ({**nap, "input": {"seconds": 0}}, "steps[0].input.seconds"),
        ({**nap, "input": {"seconds": "10"}}, "steps[0].input.seconds"),
        ({**nap, "input": {}}, "steps[0].input"),
        ({"id": "t", "kind": "task", "timeout_s": 1e308}, "steps[0].timeout_s"),
        ({"id": "t", "kind": "task", "timeout_s": -1}, "steps[0].timeout_s"),
        ({"id": "t", "kind": "task", "retry": {"backoff_s": -1}}, "steps[0].retry.backoff_s"),
        ({"id": "t", "kind": "task", "retry": {"max_backoff_s": 1e308}}, "steps[0].retry.max_backoff_s"),
        (
            {"id": "m", "kind": "map", "over": [1], "step": {"kind": "sleep", "input": {"seconds": -1}}},
            "steps[0].step.input.seconds",
        ),
    ]
    for step, field in durations:
        r = await client.put("/v1/workflows/bad", json=_steps(step), headers=h)
        problem = assert_problem(r, 422, mentions=f"step {step['id']!r}")
        assert [e["field"] for e in problem["errors"]] == [field], problem
    fine = _steps(
        {**nap, "input": {"seconds": 30 * 86400}},
        {"id": "later", "kind": "sleep", "input": {"seconds": {"$ref": "input.wait"}}},
        {"id": "t", "kind": "task", "timeout_s": 0.5, "retry": {"backoff_s": 0}},
    )
    r = await client.put("/v1/workflows/durations", json=fine, headers=h)
    assert r.status_code == 201, r.text
    for body, message in cases:
        r = await client.put("/v1/workflows/bad", json=body, headers=h)
        problem = assert_problem(r, 422, mentions=message)
        assert problem["errors"], problem
    r = await client.get("/v1/workflows/bad", headers=h)
    assert_problem(r, 404)  # nothing half-written


async def test_versions_and_runs_keep_theirs(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    name = await put_workflow(client, h, DIAMOND)
    again = await client.put(f"/v1/workflows/{name}", json=DIAMOND, headers=h)
    assert again.status_code == 200 and again.json()["version"] == 1
    run = await start(client, h, name, {"n": 3})
    assert run["version"] == 1
    changed = {"steps": [*DIAMOND["steps"], {"id": "f", "kind": "task", "depends_on": ["e"]}]}
    r = await client.put(f"/v1/workflows/{name}", json=changed, headers=h)
    assert r.status_code == 201 and r.json()["version"] == 2
    assert [v["version"] for v in r.json()["versions"]] == [1, 2]
    shown = (await client.get(f"/v1/workflow-runs/{run['id']}", headers=h)).json()
    assert shown["version"] == 1 and len(shown["steps"]) == 5
    v1 = await client.get(f"/v1/workflows/{name}/versions/1", headers=h)
    assert len(v1.json()["definition"]["steps"]) == 5
    listed = (await client.get("/v1/workflows", headers=h)).json()["items"]
    assert [(w["name"], w["version"]) for w in listed] == [(name, 2)]
    newer = await start(client, h, name, {"n": 1})
    assert newer["version"] == 2 and newer["progress"]["total"] == 6
