"""Value types of the event log and the validation of incoming events."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memory_service.errors import FieldError, InvalidInput
from memory_service.validation import check_json_object, check_text

SEVERITIES = ("debug", "info", "warn", "error")
MAX_TYPE = 128
MAX_TYPE_FILTERS = 20
MAX_SHORT = 256
MAX_ATTRIBUTES_BYTES = 16 * 1024
_TYPE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")


@dataclass(slots=True)
class NewEvent:
    type: str
    severity: str = "info"
    source: str | None = None
    ts: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    task_id: str | None = None
    execution_id: str | None = None
    agent_id: str | None = None
    duration_ms: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # set only by an import, which keeps an exported event's id so that importing
    # the same export again finds the event already there; otherwise a fresh UUID
    id: uuid.UUID | None = None


@dataclass(slots=True)
class Event:
    seq: int  # global, internal: keyset order across the table
    number: int  # 1, 2, 3, ... per tenant: the only sequence a client sees
    id: str
    type: str
    severity: str
    source: str | None
    ts: datetime
    received_at: datetime
    trace_id: str | None
    span_id: str | None
    task_id: str | None
    execution_id: str | None
    agent_id: str | None
    duration_ms: float | None
    attributes: dict[str, Any]


@dataclass(slots=True)
class EventQuery:
    """Filters shared by listing and streaming."""

    types: list[str] = field(default_factory=list)  # dotted prefixes: "tool" matches "tool.call"
    min_severity: str | None = None
    task_id: str | None = None
    execution_id: str | None = None
    agent_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    workflow_run_id: str | None = None  # progress events of one workflow run

    def validate(self) -> EventQuery:
        if len(self.types) > MAX_TYPE_FILTERS:
            raise InvalidInput(
                f"give at most {MAX_TYPE_FILTERS} type prefixes",
                errors=[FieldError("type", f"at most {MAX_TYPE_FILTERS}")],
            )
        for i, t in enumerate(self.types):
            check_type(t.rstrip("."), f"type[{i}]")
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise InvalidInput(
                f"min_severity must be one of {', '.join(SEVERITIES)}",
                errors=[FieldError("min_severity", "unknown severity")],
            )
        for name in ("task_id", "execution_id", "agent_id", "workflow_run_id"):
            check_text(getattr(self, name), name, MAX_SHORT)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidInput(
                    f"{name} needs a time zone", errors=[FieldError(name, "RFC 3339 with zone")]
                )
        return self


def check_type(value: Any, where: str = "type") -> str:
    if not isinstance(value, str) or len(value) > MAX_TYPE or not _TYPE.match(value):
        raise InvalidInput(
            f"{where} must be a dotted lowercase name like 'agent.step' (at most {MAX_TYPE})",
            errors=[FieldError(where, "dotted lowercase name")],
        )
    return value


def validate_event(event: NewEvent, where: str, default_trace_id: str | None) -> NewEvent:
    """Checks one event and fills its defaults (time stamp, trace id)."""
    check_type(event.type, f"{where}type")
    if event.severity not in SEVERITIES:
        raise InvalidInput(
            f"{where}severity must be one of {', '.join(SEVERITIES)}",
            errors=[FieldError(f"{where}severity", "unknown severity")],
        )
    for name in ("source", "trace_id", "span_id", "task_id", "execution_id", "agent_id"):
        value = check_text(getattr(event, name), f"{where}{name}", MAX_SHORT)
        if value == "":
            raise InvalidInput(
                f"{where}{name} must not be empty", errors=[FieldError(f"{where}{name}", "empty")]
            )
    if event.ts is None:
        event.ts = datetime.now(UTC)
    elif event.ts.tzinfo is None:
        raise InvalidInput(
            f"{where}ts needs a time zone", errors=[FieldError(f"{where}ts", "RFC 3339 with zone")]
        )
    if event.duration_ms is not None and (
        isinstance(event.duration_ms, bool)
        or not math.isfinite(event.duration_ms)
        or event.duration_ms < 0
    ):
        raise InvalidInput(
            f"{where}duration_ms must be a finite number >= 0",
            errors=[FieldError(f"{where}duration_ms", ">= 0")],
        )
    check_json_object(event.attributes, f"{where}attributes", MAX_ATTRIBUTES_BYTES)
    if event.trace_id is None:
        event.trace_id = default_trace_id
    return event
