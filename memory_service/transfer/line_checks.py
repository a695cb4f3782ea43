"""Checks of decoded export lines before they are written, and the errors that name the line.

Every rule a line must pass on import (lengths, choices, tags, JSON objects,
secrets, the memory validator's limits) is the same rule the HTTP API applies;
a failure becomes one ``InvalidInput`` naming the line number, so the caller's
transaction rolls back and nothing of the stream is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memory_service.errors import FieldError, InvalidInput, MemoryServiceError
from memory_service.memories.models import Scope
from memory_service.memories.validation import MemoryValidator
from memory_service.records import environments, tasks
from memory_service.transfer.lines import EnvironmentLine, MemoryLine, TaskLine
from memory_service.validation import check_choice, check_json_object, check_tags, check_text


def line_error(lineno: int, message: str) -> InvalidInput:
    return InvalidInput(f"line {lineno}: {message}", errors=[FieldError(f"line {lineno}", message)])


def checked(lineno: int, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except MemoryServiceError as exc:
        raise line_error(lineno, exc.detail) from None


def check_memory(v: MemoryValidator, m: MemoryLine) -> None:
    v.check_content(m.content)
    if m.context is not None:
        v.check_content(m.context, "context")
    v.check_metadata(m.metadata)
    v.check_importance(m.importance)
    v.check_scope(Scope(m.user_id, m.agent_id, m.run_id, m.namespace))
    for i, h in enumerate(m.history or []):  # stored as jsonb beside the memory
        for name, value in (("old_metadata", h.old_metadata), ("new_metadata", h.new_metadata)):
            if value is not None:
                v.check_metadata(value, f"history[{i}].{name}")


def check_task(t: TaskLine) -> None:
    check_text(t.title, "title", tasks.MAX_TITLE, required=True)
    check_text(t.description, "description", tasks.MAX_TEXT)
    check_choice(t.status, "status", tasks.STATUSES)
    check_choice(t.priority, "priority", tasks.PRIORITIES)
    check_text(t.agent_id, "agent_id", tasks.MAX_SHORT)
    check_tags(t.tags)
    check_json_object(t.metadata, "metadata")


def check_environment(e: EnvironmentLine) -> None:
    check_text(e.name, "name", environments.MAX_NAME, required=True)
    check_text(e.description, "description", tasks.MAX_TEXT)
    check_json_object(e.config, "config")
    environments.check_secrets(dict.fromkeys(e.secret_names) | (e.secrets or {}))
