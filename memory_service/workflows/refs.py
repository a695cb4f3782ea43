"""Resolution of ``{"$ref": "path"}`` placeholders in a step's input template.

Paths are dotted: ``input.a.b`` reads the run's input, ``steps.s.output.x.0``
reads an earlier step's output (a number indexes a list), and inside a map's
child template ``item`` and ``index`` are the child's element and position. A
path that does not resolve raises ``RefError`` with a message that names it; the
engine fails the step with that message instead of letting the run hang.
"""

from __future__ import annotations

from typing import Any


class RefError(ValueError):
    """A reference that names nothing in the run's data."""


def resolve(template: Any, context: dict[str, Any]) -> Any:
    """A copy of ``template`` with every reference replaced by the value it names."""
    if isinstance(template, dict):
        if set(template) == {"$ref"}:
            return lookup(context, template["$ref"])
        return {key: resolve(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, context) for value in template]
    return template


def lookup(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise RefError(
                f"input reference {path!r} does not resolve: nothing at {'.'.join(walked)!r}"
            )
    return value
