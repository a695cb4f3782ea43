"""Workflow definitions: parsing, validation and the rules of ``$ref`` references.

A definition is ``{"steps": [...], "description"?}``; each step has an ``id``, a
``kind``, ``depends_on``, an ``input`` template, ``retry``, ``timeout_s`` and
``queue`` (``map`` steps also ``over`` and a ``step`` template for their
children). ``parse_definition`` returns the normalised definition (defaults
filled in) or raises ``InvalidInput`` naming the step at fault: an unknown kind
or dependency, a cycle (spelled out), or a reference to a step that is not
upstream. Templates are plain JSON in which an object ``{"$ref": "path"}`` is
replaced at run time (``memory_service.workflows.refs``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from memory_service.errors import FieldError, InvalidInput

KINDS = ("task", "memory.search", "memory.add", "sleep", "wait_for_signal", "map")
CHILD_KINDS = ("task", "memory.search", "memory.add", "sleep")
BUILTIN_QUEUE = "_builtin"  # the service's own queue; worker queues never start with "_"
MAX_STEPS = 200
DEFAULT_RETRY = {"max_attempts": 3, "backoff_s": 1.0, "max_backoff_s": 300.0}
# the longest durations a definition may ask for, in seconds
MAX_SLEEP_S = 30 * 86400
MAX_TIMEOUT_S = 7 * 86400
MAX_BACKOFF_S = 86400
_STEP_KEYS = {"id", "kind", "depends_on", "input", "retry", "timeout_s", "queue", "over", "step"}
_CHILD_KEYS = {"kind", "input", "retry", "timeout_s", "queue"}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QUEUE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(field, message)])


def parse_definition(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("body", "a workflow definition is a JSON object with steps")
    unknown = set(body) - {"steps", "description"}
    if unknown:
        raise _bad(sorted(unknown)[0], f"unknown field {sorted(unknown)[0]!r}")
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps or len(steps) > MAX_STEPS:
        raise _bad("steps", f"steps must be a list of 1 to {MAX_STEPS} steps")
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 2000):
        raise _bad("description", "description must be a string of at most 2000 characters")
    parsed = [_parse_step(step, i) for i, step in enumerate(steps)]
    ids = [s["id"] for s in parsed]
    for i, step in enumerate(parsed):
        if step["id"] in ids[:i]:
            raise _bad(f"steps[{i}].id", f"step {step['id']!r} is defined twice")
    known = set(ids)
    for i, step in enumerate(parsed):
        for dep in step["depends_on"]:
            if dep not in known:
                raise _bad(
                    f"steps[{i}].depends_on",
                    f"step {step['id']!r} depends on unknown step {dep!r}",
                )
    _check_acyclic(parsed)
    _check_references(parsed)
    out: dict[str, Any] = {"steps": parsed}
    if description is not None:
        out["description"] = description
    return out


def digest(definition: dict[str, Any]) -> str:
    """A stable fingerprint: an unchanged definition is not a new version."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_step(step: Any, i: int) -> dict[str, Any]:
    where = f"steps[{i}]"
    if not isinstance(step, dict):
        raise _bad(where, "each step is a JSON object")
    sid = step.get("id")
    if not isinstance(sid, str) or not _ID.match(sid):
        raise _bad(f"{where}.id", "a step id is 1-64 letters, digits, '_' or '-'")
    unknown = set(step) - _STEP_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"{where}.{name}", f"step {sid!r} has an unknown field {name!r}")
    kind = step.get("kind")
    if kind not in KINDS:
        raise _bad(
            f"{where}.kind", f"step {sid!r} has unknown kind {kind!r} (one of {', '.join(KINDS)})"
        )
    deps = step.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise _bad(f"{where}.depends_on", f"step {sid!r}: depends_on is a list of step ids")
    parsed = _common(step, kind, where, sid)
    parsed.update(id=sid, depends_on=list(dict.fromkeys(deps)))
    if kind == "map":
        if "over" not in step:
            raise _bad(f"{where}.over", f"map step {sid!r} needs 'over' (a list or a $ref)")
        parsed["over"] = step["over"]
        parsed["step"] = _parse_child(step.get("step"), f"{where}.step", sid)
    elif "over" in step or "step" in step:
        raise _bad(f"{where}.over", f"step {sid!r}: only map steps take 'over' and 'step'")
    return parsed


def _parse_child(child: Any, where: str, sid: str) -> dict[str, Any]:
    if not isinstance(child, dict):
        raise _bad(where, f"map step {sid!r} needs a 'step' template object")
    unknown = set(child) - _CHILD_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"{where}.{name}", f"map step {sid!r}: unknown field {name!r}")
    kind = child.get("kind")
    if kind not in CHILD_KINDS:
        raise _bad(
            f"{where}.kind",
            f"map step {sid!r}: child kind {kind!r} is not one of {', '.join(CHILD_KINDS)}",
        )
    return _common(child, kind, where, sid)


def _common(step: dict[str, Any], kind: str, where: str, sid: str) -> dict[str, Any]:
    retry = dict(DEFAULT_RETRY)
    given = step.get("retry", {})
    if not isinstance(given, dict) or set(given) - set(DEFAULT_RETRY):
        raise _bad(f"{where}.retry", f"step {sid!r}: retry takes {', '.join(DEFAULT_RETRY)}")
    retry.update(given)
    attempts = retry["max_attempts"]
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise _bad(f"{where}.retry.max_attempts", f"step {sid!r}: max_attempts is 1..100")
    for name in ("backoff_s", "max_backoff_s"):
        # 0 is allowed: an immediate retry is a meaningful choice
        retry[name] = _seconds(retry[name], f"{where}.retry.{name}", sid, MAX_BACKOFF_S, zero=True)
    timeout = step.get("timeout_s")
    if timeout is not None:
        timeout = _seconds(timeout, f"{where}.timeout_s", sid, MAX_TIMEOUT_S)
    if kind == "sleep":
        _check_sleep(step.get("input", {}), f"{where}.input", sid)
    queue = step.get("queue", "default")
    if kind != "task":
        if "queue" in step:
            raise _bad(f"{where}.queue", f"step {sid!r}: only task steps have a queue")
        queue = BUILTIN_QUEUE
    elif not isinstance(queue, str) or not QUEUE.match(queue):
        raise _bad(f"{where}.queue", f"step {sid!r}: a queue is 1-64 of a-z 0-9 _ . -")
    return {
        "kind": kind,
        "input": step.get("input", {}),
        "retry": retry,
        "timeout_s": timeout,
        "queue": queue,
    }


def _seconds(value: Any, field: str, sid: str, most: int, *, zero: bool = False) -> float:
    """A duration in seconds: a number, above 0 (or 0 itself when ``zero``), at most ``most``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if zero else value > 0)
        or not value <= most
    ):
        least = "0" if zero else "above 0"
        name = field.rsplit(".", 1)[-1]
        raise _bad(field, f"step {sid!r}: {name} is a number of seconds, {least} and at most {most}, not {value!r}")
    return float(value)


def _check_sleep(step_input: Any, field: str, sid: str) -> None:
    """A literal ``seconds`` is checked now; one given as a ``$ref`` when the step runs."""
    if isinstance(step_input, dict) and set(step_input) == {"$ref"}:
        return
    if not isinstance(step_input, dict) or "seconds" not in step_input:
        raise _bad(field, f"sleep step {sid!r} needs input {{'seconds': number}}")
    seconds = step_input["seconds"]
    if not (isinstance(seconds, dict) and set(seconds) == {"$ref"}):
        _seconds(seconds, f"{field}.seconds", sid, MAX_SLEEP_S)


def _check_acyclic(steps: list[dict[str, Any]]) -> None:
    deps = {s["id"]: s["depends_on"] for s in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    position = {s["id"]: i for i, s in enumerate(steps)}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise _bad(
                    f"steps[{position[dep]}].depends_on",
                    f"step {dep!r} is in a cycle: {' -> '.join(cycle)}",
                )
            if dep not in state:
                visit(dep, path)
        path.pop()
        state[node] = 2

    for step in steps:
        if step["id"] not in state:
            visit(step["id"], [])


def ancestors(steps: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every step's transitive upstream steps."""
    deps = {s["id"]: s["depends_on"] for s in steps}
    memo: dict[str, set[str]] = {}

    def up(node: str) -> set[str]:
        if node not in memo:
            found: set[str] = set()
            for dep in deps[node]:
                found |= {dep, *up(dep)}
            memo[node] = found
        return memo[node]

    return {sid: up(sid) for sid in deps}


def iter_refs(template: Any) -> Iterator[Any]:
    """Every ``$ref`` value inside a template."""
    if isinstance(template, dict):
        if set(template) == {"$ref"}:
            yield template["$ref"]
            return
        for value in template.values():
            yield from iter_refs(value)
    elif isinstance(template, list):
        for value in template:
            yield from iter_refs(value)


def ref_step(ref: str) -> str | None:
    """The step a ``steps.<id>.output...`` reference reads, else None."""
    parts = ref.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "steps" else None


def _check_references(steps: list[dict[str, Any]]) -> None:
    upstream = ancestors(steps)
    for i, step in enumerate(steps):
        templates = [(f"steps[{i}].input", step["input"], False)]
        if step["kind"] == "map":
            templates.append((f"steps[{i}].over", step["over"], False))
            templates.append((f"steps[{i}].step.input", step["step"]["input"], True))
        for where, template, in_child in templates:
            for ref in iter_refs(template):
                _check_ref(ref, where, step["id"], upstream[step["id"]], in_child)


def _check_ref(ref: Any, where: str, sid: str, upstream: set[str], in_child: bool) -> None:
    if not isinstance(ref, str) or not ref or len(ref) > 512:
        raise _bad(where, f"step {sid!r}: a $ref is a dotted path string")
    parts = ref.split(".")
    head = parts[0]
    if head == "input" or (in_child and head in ("item", "index")):
        return
    if head == "steps" and len(parts) >= 3 and parts[2] == "output":
        if parts[1] not in upstream:
            raise _bad(
                where,
                f"step {sid!r} refers to {ref!r}, but step {parts[1]!r} is not upstream of it",
            )
        return
    allowed = "input..., steps.<id>.output..." + (", item..., index" if in_child else "")
    raise _bad(where, f"step {sid!r}: cannot resolve {ref!r} (a $ref starts with {allowed})")
