"""Answers the OpenAPI document promises: enum refusals list the choices, JSON's
whole numbers are integers, and a few refusals that used to be a 500 or a 422."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from api.rules import NOT_BLANK, STRIPPED
from tests.conftest import ADMIN, assert_problem

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


# search bodies at the edge of a rule across fields: (body, what the service answers,
# whether the schema states the rule; three are said in the fields' descriptions only,
# see api/search_rules.py)
SEARCH_EDGES: list[tuple[dict[str, Any], int, bool]] = [
    ({"query": "x", "rerank": "learned", "group_by": "run_id"}, 200, True),
    ({"query": "x", "rerank": "learned", "diversity": 0.5}, 200, True),
    ({"query": "x", "rerank": "learned", "recency_weight": 0.2}, 200, True),
    ({"query": "x", "rerank": "cross", "group_by": "run_id"}, 422, True),
    ({"query": "x", "rerank": "cross", "diversity": 0.5}, 422, True),
    ({"query": "x", "rerank": "cross", "diversity": 0}, 422, True),  # no cross-encoder here
    ({"query": "x", "rerank": "cross", "recency_weight": 0.2}, 422, True),
    ({"query": "x", "rerank": "none", "group_by": "run_id"}, 200, True),
    ({"query": "x", "rerank": "cross"}, 422, True),  # no cross-encoder configured here
    ({"embedding": [0.1] * 384, "rerank": "learned"}, 200, True),
    ({"query": "x", "group_by": ""}, 422, True),
    ({"query": "x", "group_by": "metadata.session", "diversity": 0}, 200, True),
    ({"query": "x", "filter": {"metadata.n": 2**53 + 1}}, 422, True),
    ({"query": "x", "filter": {"metadata.n": 2**53}}, 200, True),
    ({"query": "x", "group_by": "run_id", "diversity": 0.3}, 422, False),
    ({"query": "x", "context_weight": 0.3}, 422, False),
    ({"query": "x", "context_by": "run_id", "context_weight": 0.3}, 200, True),
    ({"query": "x", "mode": "hybrid", "fusion": "scores", "rrf_k": 60}, 422, False),
    ({"query": "x", "mode": "hybrid", "fusion": "rrf", "rrf_k": 60}, 200, True),
]


async def test_the_schema_and_the_service_agree_on_search_bodies(client: Any, tenant: dict) -> None:
    """Each body is valid by the served schema exactly when the service takes it, but
    for the rules the schema does not state (it then takes what the service refuses)."""
    doc = (await client.get("/schema/openapi.json")).json()
    # the document's components as the root, so that each $ref resolves in it
    validator = jsonschema.Draft202012Validator(
        {"components": doc["components"], "$ref": "#/components/schemas/SearchBody"}
    )
    disagree = []
    for body, status, stated in SEARCH_EDGES:
        r = await client.post("/v1/memories/search", json=body, headers=tenant["headers"])
        assert r.status_code == status, (body, r.text)
        if validator.is_valid(body) != (status == 200 if stated else True):
            disagree.append(body)
    assert disagree == []


def test_blank_in_the_schema_is_blank_to_the_service() -> None:
    """The schema's blank characters are exactly those ``str.strip()`` removes (a
    tenant name or a task title of them alone is refused), in every regex dialect."""
    blank = re.compile(f"[{STRIPPED}]")
    disagree = [
        hex(c) for c in range(0x110000)
        if not 0xD800 <= c < 0xE000 and bool(blank.fullmatch(chr(c))) != chr(c).isspace()
    ]  # fmt: skip
    assert disagree == []
    assert "\\s" not in NOT_BLANK
    assert [bool(re.search(NOT_BLANK, t)) for t in ("a", " a ", "\t", "\x1c", "\ufeff")] == [
        True, True, False, False, True,
    ]  # fmt: skip


async def test_a_blank_tenant_name_is_refused_as_the_schema_says(client: Any) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    assert doc["components"]["schemas"]["TenantCreate"]["properties"]["name"]["pattern"] == NOT_BLANK
    for name in ("\t", "\x1c \u3000"):
        r = await client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
        assert_problem(r, 422, mentions="name")
