"""Reading HTML form posts: every field as text, never a validation error of its own.

The console leaves all rules to the core services; a form only gets its fields
trimmed, and the services' ``InvalidInput`` names what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request

from memory_service.errors import FieldError, InvalidInput


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    form = await request.form()
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, str) and name != "_csrf":
            fields.setdefault(name, []).append(value.strip())
    return fields


def one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]


def optional(fields: dict[str, list[str]], name: str) -> str | None:
    return one(fields, name) or None


def version(fields: dict[str, list[str]]) -> int | None:
    text = one(fields, "version")
    return int(text) if text.isdigit() and len(text) <= 10 else None


def json_object(text: str, field: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInput(
            f"{field} must be a JSON object", errors=[FieldError(field, "not JSON")]
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object", errors=[FieldError(field, "object")])
    return value
