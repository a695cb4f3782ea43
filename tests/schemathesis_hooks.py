"""Schemathesis hooks of the conformance test (loaded through ``SCHEMATHESIS_HOOKS``).

- NDJSON bodies (the import routes) are serialised one array item per line.
- ``DELETE /v1/memories`` needs at least one scope parameter, a rule across
  parameters that OpenAPI cannot state: a positive case without one gets a namespace.
- Some values are valid only against the data: a reference to another row
  (``task_id``, ``environment_id`` in a body), to a step of an execution (``at``,
  ``to``, ``from``, a checkpoint's ``seq``, a new step's ``parent_seq``), and
  ``expires_at``, which must lie in the future. The schema states their form; positive cases name what every
  execution has (step 0), leave row references and parents out and expire in 2999.
  A step's ``started_at`` must not be after its ``ended_at`` (two values compared):
  positive cases with them the other way round keep the end only.
- A claim's long poll (``wait_s``, also in a completion's ``claim``) waits at most a
  second in positive cases.
- Three rules of a search body across fields are not in its schema (the branches
  would multiply past what the generator takes; ``api/search_rules.py``): positive
  cases drop ``context_weight`` without ``context_by``, ``diversity`` beside
  ``group_by`` and ``rrf_k`` beside ``fusion: "scores"``.
- The stateful phase infers links by field names, so a value of one field (an
  event's free-form ``execution_id``, a memory's ``agent_id``) can land in another's
  path, where only a UUID is valid: positive cases replace such a path id with a fresh
  UUID (a missing row, 404), as a client would only send an id it holds.
- A cursor is opaque and signed: the schema states its shape, but only a value the
  service handed out is valid, so positive cases leave it out (the first page, or
  the start of the feed) instead of inventing one; negative cases still send
  malformed ones.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

import schemathesis

from api.rules import UUID as UUID_PATTERN

NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")
ROW_REFS = ("task_id", "environment_id", "parent_id")
STEP_REFS = ("at", "to", "from")
SCOPE = ("user_id", "agent_id", "run_id", "namespace")
SIGNATURE = "[A-Za-z0-9_-]{22}"  # the signature part of the cursor pattern


@schemathesis.serializer(*NDJSON)
def ndjson(ctx: Any, value: Any) -> bytes:
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    if isinstance(case.body, dict):
        _state_free_body(case.path, case.body)
        _short_polls(case.body)
        if case.path == "/v1/memories/search":
            _unstated_search_rules(case.body)
    if case.path.endswith("/steps") and isinstance(case.body, (dict, list)):
        steps = case.body if isinstance(case.body, list) else [case.body, *(case.body.get("steps") or [])]
        for step in steps:
            if isinstance(step, dict):
                step.pop("parent_seq", None)
                _ordered_times(step)
    _path_ids(case)
    if isinstance(case.query, dict):
        for name in STEP_REFS:
            if name in case.query and "/executions/" in case.path:
                case.query[name] = "0"
    if case.method == "DELETE" and case.path == "/v1/memories":
        case.query = dict(case.query or {})
        if not any(case.query.get(name) for name in SCOPE):
            case.query["namespace"] = "conformance"
    for parameter in case.operation.definition.raw.get("parameters", []):
        if SIGNATURE not in json.dumps(parameter.get("schema", {})):
            continue
        values = case.query if parameter["in"] == "query" else case.headers
        if values is not None:  # header names compare without case
            for name in [n for n in values if n.lower() == parameter["name"].lower()]:
                del values[name]
    return case


def _ordered_times(step: dict[str, Any]) -> None:
    """A step's ``started_at`` is not after its ``ended_at``: two fields' values, which
    JSON Schema does not compare; a positive case that has them the other way round
    keeps its end only."""
    try:
        started = datetime.fromisoformat(step["started_at"])
        ended = datetime.fromisoformat(step["ended_at"])
        later = started > ended
    except (KeyError, TypeError, ValueError):
        return
    if later:
        del step["started_at"]


def _path_ids(case: Any) -> None:
    values = case.path_parameters
    if not isinstance(values, dict):
        return
    for parameter in case.operation.definition.raw.get("parameters", []):
        pattern = parameter.get("schema", {}).get("pattern")
        name = parameter.get("name")
        if parameter.get("in") != "path" or pattern != UUID_PATTERN or name not in values:
            continue
        if not re.search(pattern, str(values[name])):
            values[name] = str(uuid.uuid4())


def _unstated_search_rules(body: dict[str, Any]) -> None:
    if body.get("context_by") is None:
        body.pop("context_weight", None)
    if body.get("group_by") is not None:
        body.pop("diversity", None)
    if body.get("fusion") == "scores":
        body.pop("rrf_k", None)


def _short_polls(body: dict[str, Any]) -> None:
    """A claim's long poll waits at most a second: how long it may wait is behaviour,
    not a rule of the contract, and a run of 30-second polls measures nothing more."""
    for value in (body, body.get("claim")):
        if isinstance(value, dict) and isinstance(value.get("wait_s"), (int, float)):
            value["wait_s"] = min(value["wait_s"], 1)


def _state_free_body(path: str, body: dict[str, Any]) -> None:
    if isinstance(body.get("expires_at"), str):
        body["expires_at"] = "2999-01-01T00:00:00Z"
    for item in body.get("items") or []:
        if isinstance(item, dict) and isinstance(item.get("expires_at"), str):
            item["expires_at"] = "2999-01-01T00:00:00Z"
    if path.startswith(("/v1/executions", "/v1/tasks")):
        for name in ROW_REFS:
            body.pop(name, None)
    if path.endswith("/checkpoints"):
        body.pop("seq", None)
    for name in STEP_REFS:
        if name in body and path.startswith("/v1/executions/"):
            body[name] = 0
