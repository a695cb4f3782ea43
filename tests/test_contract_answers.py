"""Answers the OpenAPI document promises: enum refusals list the choices, JSON's
whole numbers are integers, and a few refusals that used to be a 500 or a 422."""

from __future__ import annotations

from typing import Any

from tests.conftest import assert_problem

SEVERITIES = "debug, info, warn, error"


async def test_a_refused_enum_value_lists_the_choices(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    body = {"items": [{"type": "agent.step", "severity": "loud"}]}
    r = await client.post("/v1/events", json=body, headers=h)
    assert_problem(r, 400, mentions=f"must be one of {SEVERITIES}")
    r = await client.get("/v1/events", params={"min_severity": "loud"}, headers=h)
    assert_problem(r, 400, mentions=SEVERITIES)
    r = await client.post("/v1/memories/search", json={"query": "x", "mode": "fuzzy"}, headers=h)
    assert_problem(r, 400, mentions="vector, keyword, hybrid")


async def test_a_whole_number_written_with_a_fraction_is_an_integer(client: Any, tenant: dict) -> None:
    body = {"worker_id": "w", "queues": ["q"], "max_steps": 2.0}
    r = await client.post("/v1/workers/claim", json=body, headers=tenant["headers"])
    assert r.status_code == 204, r.text
    body["max_steps"] = 2.5
    r = await client.post("/v1/workers/claim", json=body, headers=tenant["headers"])
    assert_problem(r, 400, mentions="max_steps")


async def test_digits_outside_ascii_are_not_a_version(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = (await client.post("/v1/memories", json={"content": "versioned"}, headers=h)).json()
    superscript_two = {**h, "If-Match": "\u00b2".encode("latin-1")}
    r = await client.patch(f"/v1/memories/{m['id']}", json={"importance": 0.2}, headers=superscript_two)
    assert_problem(r, 422, mentions="If-Match must be a version number")


async def test_naming_the_head_of_an_execution_without_steps_is_a_conflict(
    client: Any, tenant: dict
) -> None:
    h = tenant["headers"]
    eid = (await client.post("/v1/executions", json={"agent_id": "a"}, headers=h)).json()["id"]
    r = await client.post(f"/v1/executions/{eid}/checkpoints", json={"label": "start"}, headers=h)
    assert_problem(r, 409, mentions="no steps yet")
