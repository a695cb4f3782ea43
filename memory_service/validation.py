"""Checks for the plain fields of tasks, environments and events, and for every JSON value.

Each check returns the value it accepts or raises ``InvalidInput`` (or
``PayloadTooLarge`` past a size limit) naming the field, so a bad value is a
4xx problem document before anything reaches the database.

``json_problem`` is the one rule for free-form JSON (metadata, attributes,
configs, workflow inputs and outputs), applied by ``check_json_value`` here, by
``MemoryValidator.check_metadata`` and, for every request body, by the HTTP
guard: a value is accepted only if PostgreSQL's ``jsonb`` can store it and the
service's indexes can hold and compare it. So no string or key holds a NUL
character or a lone surrogate (``jsonb`` and UTF-8 refuse them), every key is a
string, no float is NaN or infinite (JSON has no such numbers; an encoder would
quietly write ``null``), no integer lies beyond ±2**53 (the indexes and
comparisons work in doubles, which would make 2**53 + 1 equal 2**53, and a
400-digit number overflow them), and nesting stops at ``MAX_JSON_DEPTH``
levels. The problem is named by its path: ``metadata.a.b[3]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in any JSON value."""
MAX_SAFE_INTEGER = 2**53
"""Integers up to this magnitude are exact as doubles; larger ones are refused."""
MAX_TAGS = 50
MAX_TAG = 64
_PATH_KEY_CHARS = 64  # a key longer than this is cut short when it names a problem

Other = Callable[[Any, str], None]


def check_text(value: Any, where: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(
            f"{where} must be a non-empty string", errors=[FieldError(where, "text")]
        )
    if "\x00" in value:
        raise InvalidInput(f"{where} contains a NUL character", errors=[FieldError(where, "NUL")])
    if len(value) > limit:
        raise PayloadTooLarge(
            f"{where} is longer than {limit} characters",
            errors=[FieldError(where, f"at most {limit} characters")],
        )
    return value


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not UTF-8"
    return None


def scalar_problem(value: Any) -> str | None:
    """Why a JSON scalar cannot be stored and compared, or None when it can."""
    if value is None or value is True or value is False:
        return None
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return None
        return (
            f"an integer beyond ±2**53 ({MAX_SAFE_INTEGER}) cannot be compared exactly; "
            "send it as a string"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else "NaN and Infinity are not JSON numbers"
    return f"{type(value).__name__} is not a JSON value"


# where a value sits, as a chain (parent chain, key or index) built only for containers;
# the path text is spelled out only for the value a problem is found in
Trail = tuple[Any, str | int] | None


def json_problem(
    value: Any, path: str = "", *, depth: int = MAX_JSON_DEPTH, other: Other | None = None
) -> tuple[str, str] | None:
    """The first place in ``value`` that cannot be stored and compared: (path, reason).

    The walk is iterative, so no nesting can exhaust the stack, and checks the scalars
    of a container in line (they are most of any document). ``other`` is called with any
    value that is not plain JSON and its path (the HTTP guard passes its check of typed
    structs); without it such a value is a problem."""
    problem = _inline_problem(value)
    if problem is not _CONTAINER:  # a lone scalar (a struct's text field, say)
        return None if problem is None else (path, problem)
    stack: list[tuple[Any, Trail, int]] = [(value, None, 0)]
    while stack:
        item, trail, level = stack.pop()
        if isinstance(item, dict):
            if level >= depth:
                return _spell(path, trail), f"nested deeper than {depth} levels"
            for key, child in item.items():
                if type(key) is not str:
                    return _spell(path, trail), "object keys must be strings"
                if not key.isascii() or "\x00" in key:
                    problem = _text_problem(key)
                    if problem is not None:
                        return _spell(path, trail), f"a key {problem}"
                problem = _inline_problem(child)
                if problem is _CONTAINER:
                    stack.append((child, (trail, key), level + 1))
                elif problem is not None:
                    return _spell(path, (trail, key)), problem
        elif isinstance(item, list | tuple):
            if level >= depth:
                return _spell(path, trail), f"nested deeper than {depth} levels"
            for i, child in enumerate(item):
                problem = _inline_problem(child)
                if problem is _CONTAINER:
                    stack.append((child, (trail, i), level + 1))
                elif problem is not None:
                    return _spell(path, (trail, i)), problem
        elif other is not None and not isinstance(item, str | int | float | type(None)):
            other(item, _spell(path, trail))
        else:
            problem = scalar_problem(item)
            if problem is not None:
                return _spell(path, trail), problem
    return None


_CONTAINER = "container"  # not a problem: a value to walk into (or to hand to ``other``)


def _inline_problem(value: Any) -> str | None:
    """``scalar_problem`` for the common scalar types, or ``_CONTAINER`` for the rest."""
    kind = type(value)
    if kind is str:
        return None if value.isascii() and "\x00" not in value else _text_problem(value)
    if kind is int:
        return None if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else scalar_problem(value)
    if kind is float:
        return None if math.isfinite(value) else scalar_problem(value)
    if kind is bool or value is None:
        return None
    return _CONTAINER


def _spell(path: str, trail: Trail) -> str:
    steps: list[str | int] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    for step in reversed(steps):
        if isinstance(step, int):
            path = f"{path or 'body'}[{step}]"
        else:
            key = step if len(step) <= _PATH_KEY_CHARS else step[:_PATH_KEY_CHARS] + "…"
            path = f"{path}.{key}" if path else key
    return path


def check_json_value(value: Any, where: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Any JSON value within ``limit`` bytes that PostgreSQL can store and the indexes
    can compare (``json_problem``); 422 naming the path, 413 past the limit."""
    found = json_problem(value, where)
    if found is not None:
        field, reason = found
        field = field or "body"
        raise InvalidInput(f"{field}: {reason}", errors=[FieldError(field, reason)])
    try:
        size = len(msgspec.json.encode(value))
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(
            f"{where} is not valid JSON", errors=[FieldError(where, "not JSON")]
        ) from None
    if size > limit:
        raise PayloadTooLarge(
            f"{where} is {size} bytes; the limit is {limit}",
            errors=[FieldError(where, f"at most {limit} bytes")],
        )
    return value


def check_json_object(value: Any, where: str, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object within ``limit`` bytes that PostgreSQL can store (``check_json_value``)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object", errors=[FieldError(where, "object")])
    check_json_value(value, where, limit)
    return value


def check_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(
            f"{where} must be one of {', '.join(choices)}",
            errors=[FieldError(where, f"one of {', '.join(choices)}")],
        )
    return str(value)


def check_tags(value: Any, where: str = "tags") -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidInput(
            f"{where} must be a list of at most {MAX_TAGS} strings",
            errors=[FieldError(where, f"at most {MAX_TAGS} strings")],
        )
    tags: list[str] = []
    for i, tag in enumerate(value):
        text = check_text(tag, f"{where}[{i}]", MAX_TAG, required=True)
        if text not in tags:
            tags.append(str(text))
    return tags
