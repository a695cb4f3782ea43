"""Checks for execution and step input, run before anything is written.

Each check names the offending field (``steps[3].kind``) in the ``InvalidInput``
or ``PayloadTooLarge`` it raises. Step references (``at``, ``from``, ``to``) are
parsed here too: digits are a seq, an RFC 3339 time with a zone is a moment,
anything else is a checkpoint label; labels therefore start with a letter.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge
from memory_service.executions.models import (
    STATUSES,
    ExecutionChanges,
    ExecutionQuery,
    NewExecution,
    NewStep,
    StepRef,
)
from memory_service.records.tenants import parse_uuid
from memory_service.validation import check_choice, check_json_object, check_text

MAX_KIND = 64
MAX_NAME = 256
MAX_SHORT = 256
MAX_NOTE = 4096
MAX_SEQ = 2**31 - 1
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*$")
LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$")


def check_json_value(value: Any, where: str, limit: int, *, nul_checked: bool = False) -> bytes:
    """The value encoded as JSON, if it is JSON that jsonb can store within ``limit``.

    ``nul_checked``: the value is built only of parts already checked for NUL (a state
    and the patch applied to it), so the scan of the encoded text, as costly as the
    encoding itself, is skipped."""
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{where} is not valid JSON", errors=[FieldError(where, "JSON")]) from None
    if len(encoded) > limit:
        raise PayloadTooLarge(
            f"{where} is {len(encoded)} bytes; the limit is {limit}",
            errors=[FieldError(where, f"at most {limit} bytes")],
        )
    if not nul_checked and b"\\u0000" in encoded:
        raise InvalidInput(f"{where} holds a NUL character", errors=[FieldError(where, "NUL")])
    return encoded


def check_new_execution(new: NewExecution) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "metadata": check_json_object(new.metadata, "metadata"),
        "status": check_choice(new.status, "status", STATUSES),
    }
    for name in ("task_id", "environment_id"):
        value = getattr(new, name)
        if value is not None:
            fields[name] = parse_uuid(value, name)
    if new.agent_id is not None:
        fields["agent_id"] = check_text(new.agent_id, "agent_id", MAX_SHORT, required=True)
    return fields


def check_changes(changes: ExecutionChanges) -> ExecutionChanges:
    if changes.status is None and changes.metadata is None:
        raise InvalidInput("nothing to update", errors=[FieldError("body", "give status or metadata")])
    if changes.status is not None:
        check_choice(changes.status, "status", STATUSES)
    if changes.metadata is not None:
        check_json_object(changes.metadata, "metadata")
    return changes


def check_query(query: ExecutionQuery) -> dict[str, Any]:
    """The query's filters as column values (ids parsed)."""
    for status in query.status:
        check_choice(status, "status", STATUSES)
    for name in ("created_after", "created_before"):
        check_moment(getattr(query, name), name)
    if query.agent_id is not None:
        check_text(query.agent_id, "agent_id", MAX_SHORT, required=True)
    return {
        name: parse_uuid(getattr(query, name), name)
        for name in ("task_id", "environment_id", "parent_id")
        if getattr(query, name) is not None
    }


def check_moment(value: datetime | None, where: str) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{where} needs a time zone", errors=[FieldError(where, "RFC 3339 with zone")])


def check_step(step: NewStep, where: str, limit: int) -> None:
    """Everything about a step that does not need the previous state."""
    if not isinstance(step.kind, str) or not _KIND.match(step.kind) or len(step.kind) > MAX_KIND:
        raise InvalidInput(
            f"{where}kind must be a name like 'tool_call' (a letter first, at most {MAX_KIND})",
            errors=[FieldError(f"{where}kind", "a short name starting with a letter")],
        )
    check_text(step.name, f"{where}name", MAX_NAME)
    for name in ("input", "output", "error"):
        check_json_value(getattr(step, name), f"{where}{name}", limit)
    if step.has_state:
        # before the diff against the previous state, which costs far more than this
        check_json_value(step.state, f"{where}state", limit)
    check_json_object(step.metadata, f"{where}metadata")
    if step.has_state and step.state_patch is not None:
        raise InvalidInput(
            f"give {where}state or {where}state_patch, not both",
            errors=[FieldError(f"{where}state_patch", "not together with state")],
        )
    for name in ("started_at", "ended_at"):
        check_moment(getattr(step, name), f"{where}{name}")
    if step.started_at and step.ended_at and step.started_at > step.ended_at:
        raise InvalidInput(
            f"{where}started_at is after {where}ended_at",
            errors=[FieldError(f"{where}started_at", "not after ended_at")],
        )
    for name in ("seq", "parent_seq"):
        value = getattr(step, name)
        if value is not None and (isinstance(value, bool) or not 0 <= value <= MAX_SEQ):
            raise InvalidInput(f"{where}{name} is out of range", errors=[FieldError(f"{where}{name}", "range")])


def check_label(label: Any, where: str = "label") -> str:
    if not isinstance(label, str) or not LABEL.match(label):
        raise InvalidInput(
            f"{where} must start with a letter and use letters, digits and _.:/- (at most 128)",
            errors=[FieldError(where, "a label starting with a letter")],
        )
    return label


def parse_ref(raw: Any, where: str) -> StepRef:
    """A step reference from a query string or a body: seq, moment or label."""
    if isinstance(raw, datetime):
        check_moment(raw, where)
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 0 <= raw <= MAX_SEQ:
            raise InvalidInput(f"{where} is out of range", errors=[FieldError(where, "range")])
        return raw
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(
            f"{where} must be a step seq, a checkpoint label or an RFC 3339 time",
            errors=[FieldError(where, "seq, label or time")],
        )
    text = raw.strip()
    if text.isascii() and text.isdigit():
        return parse_ref(int(text) if len(text) <= 10 else MAX_SEQ + 1, where)
    if text[0].isdigit():
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            raise InvalidInput(
                f"{where} {text[:64]!r} is not an RFC 3339 time",
                errors=[FieldError(where, "RFC 3339 time with a zone")],
            ) from None
        check_moment(moment, where)
        return moment
    return check_label(text, where)
