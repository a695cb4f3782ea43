"""Checks for the plain fields of tasks, environments and events.

Each check returns the value it accepts or raises ``InvalidInput`` (or
``PayloadTooLarge`` past a size limit) naming the field, so a bad value is a
4xx problem document before anything reaches the database. JSON objects are
checked for what PostgreSQL's ``jsonb`` refuses (NUL characters) and for size.
"""

from __future__ import annotations

from typing import Any

import msgspec

from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge

MAX_JSON_BYTES = 64 * 1024
MAX_TAGS = 50
MAX_TAG = 64


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


def check_json_object(value: Any, where: str, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object within ``limit`` bytes that PostgreSQL can store (no NUL, no NaN)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object", errors=[FieldError(where, "object")])
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(
            f"{where} is not valid JSON", errors=[FieldError(where, "JSON")]
        ) from None
    if len(encoded) > limit:
        raise PayloadTooLarge(
            f"{where} is {len(encoded)} bytes; the limit is {limit}",
            errors=[FieldError(where, f"at most {limit} bytes")],
        )
    if b"\\u0000" in encoded:  # jsonb cannot store NUL; msgspec writes NaN as null
        raise InvalidInput(f"{where} holds a NUL character", errors=[FieldError(where, "NUL")])
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
