"""The platform's browser storage: parse, validate and map it to this service's rows.

A browser hands over its ``localStorage`` as a JSON object of keys to string
values. The platform's persisted stores are among them, each a JSON string
``{"state": {...}, "version": n}`` whose state holds ``tasks``, ``environments``
or ``memories`` in the browser's conventions: camelCase names, millisecond
timestamps and the UI's status names. ``parse_browser_storage`` reads all of it
without touching the database and returns a ``BrowserPlan``: the mapped items,
and for every item it refused the key, the JSON pointer inside that key's value
and the reason. Every field is mapped explicitly (see ``docs/browser-storage.md``);
a field this module does not know goes into ``metadata`` (for environments,
``config.metadata``), so nothing the browser held is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec

from memory_service.errors import MemoryServiceError
from memory_service.memories.validation import MemoryValidator
from memory_service.records.environments import MAX_NAME, check_secrets
from memory_service.records.task_models import MAX_TEXT, MAX_TITLE, PRIORITIES
from memory_service.validation import check_json_object, check_tags, check_text

SUPPORTED_VERSIONS = (0, 1)
# the platform's stores live under keys with this prefix (platform-tasks,
# platform-environments, platform-memories); another key is ignored unless its value
# is a store, so the rest of a browser's localStorage can be handed over as it is
STORE_PREFIX = "platform-"
ENTITIES = ("environments", "tasks", "memories")
# the UI's status names, and ours
UI_STATUS = {
    "todo": "pending",
    "backlog": "pending",
    "pending": "pending",
    "in-progress": "in_progress",
    "in_progress": "in_progress",
    "inProgress": "in_progress",
    "running": "in_progress",
    "done": "completed",
    "completed": "completed",
    "failed": "failed",
    "error": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}
UI_PRIORITY = {"critical": "urgent", "normal": "medium", **{p: p for p in PRIORITIES}}
MAX_SOURCE_ID = 256
COLLISIONS = "_browser"  # where an unknown field goes when metadata has the same key


@dataclass(frozen=True, slots=True)
class Rejected:
    key: str
    pointer: str
    reason: str


@dataclass(slots=True)
class Item:
    """One browser item mapped to the fields of a row of this service."""

    entity: str  # "environment" | "task" | "memory"
    source_id: str
    key: str
    pointer: str
    fields: dict[str, Any]
    source_hash: bytes
    secrets: dict[str, str] = field(default_factory=dict)
    environment_source: str | None = None  # a task's environment, by browser id


@dataclass(slots=True)
class BrowserPlan:
    environments: list[Item] = field(default_factory=list)
    tasks: list[Item] = field(default_factory=list)
    memories: list[Item] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ENTITIES}


class ItemError(Exception):
    """One browser item cannot be taken in; ``pointer`` is relative to the item."""

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(reason)
        self.pointer = pointer
        self.reason = reason


def parse_browser_storage(payload: Any, validator: MemoryValidator) -> BrowserPlan:
    """Validate every key and item; never raises for a bad item, only reports it."""
    plan = BrowserPlan()
    if not isinstance(payload, dict):
        plan.rejected.append(Rejected("", "", "the body must be a JSON object of keys to strings"))
        return plan
    seen: dict[tuple[str, str], str] = {}
    names: dict[str, str] = {}
    for key in sorted(payload):
        value = payload[key]
        store = _read_store(key, value, plan)
        if store is None:
            continue
        for entity in ENTITIES:
            items = store.get(entity)
            if items is None:
                continue
            if not isinstance(items, list):
                plan.rejected.append(Rejected(key, f"/state/{entity}", "must be an array"))
                continue
            for i, raw in enumerate(items):
                pointer = f"/state/{entity}/{i}"
                try:
                    item = MAPPERS[entity](raw, validator)
                except ItemError as exc:
                    plan.rejected.append(Rejected(key, pointer + exc.pointer, exc.reason))
                    continue
                item.key, item.pointer = key, pointer
                first = seen.setdefault((entity, item.source_id), f"{key}{pointer}")
                if first != f"{key}{pointer}":
                    reason = f"duplicate source id {item.source_id!r} (first at {first})"
                    plan.rejected.append(Rejected(key, pointer + "/id", reason))
                    continue
                if entity == "environments":
                    other = names.setdefault(item.fields["name"], f"{key}{pointer}")
                    if other != f"{key}{pointer}":
                        reason = f"duplicate environment name (first at {other})"
                        plan.rejected.append(Rejected(key, pointer + "/name", reason))
                        continue
                getattr(plan, entity).append(item)
    return plan


def _read_store(key: str, value: Any, plan: BrowserPlan) -> dict[str, Any] | None:
    known = key.startswith(STORE_PREFIX)
    if not isinstance(value, str):
        if known:
            plan.rejected.append(Rejected(key, "", "the value of a store key must be a string"))
        else:
            plan.ignored_keys.append(key)
        return None
    try:
        doc = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        if known:
            plan.rejected.append(Rejected(key, "", f"the store string is not JSON: {exc}"))
        else:
            plan.ignored_keys.append(key)
        return None
    state = doc.get("state") if isinstance(doc, dict) else None
    if not isinstance(state, dict) or not any(e in state for e in ENTITIES):
        if known:
            reason = 'a store must be {"state": {...}, "version": n} holding ' + ", ".join(ENTITIES)
            plan.rejected.append(Rejected(key, "/state", reason))
        else:
            plan.ignored_keys.append(key)
        return None
    version = doc.get("version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        reason = f"unsupported store version {version!r}; supported: {SUPPORTED_VERSIONS}"
        plan.rejected.append(Rejected(key, "/version", reason))
        return None
    return state


# -- field mapping ---------------------------------------------------------------------
def _source_hash(raw: dict[str, Any]) -> bytes:
    return hashlib.sha256(msgspec.json.encode(raw, order="sorted")).digest()


def _source_id(raw: Any) -> str:
    if not isinstance(raw, dict):
        raise ItemError("", "an item must be a JSON object")
    value = raw.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ItemError("/id", "id is required (a string or an integer)")
    text = str(value)
    if len(text) > MAX_SOURCE_ID or "\x00" in text:
        raise ItemError("/id", f"id must be at most {MAX_SOURCE_ID} characters")
    return text


def _millis(raw: dict[str, Any], name: str, *, required: bool = False) -> datetime | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise ItemError(f"/{name}", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ItemError(f"/{name}", f"{name} must be milliseconds since 1970 (a number)")
    try:
        return datetime.fromtimestamp(value / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        raise ItemError(f"/{name}", f"{name} is out of range") from None


def _checked(name: str, check: Callable[[], Any]) -> Any:
    """Run a service check and turn its error into an item error at ``/name``."""
    try:
        return check()
    except MemoryServiceError as exc:
        raise ItemError(f"/{name}", exc.detail) from None


def _with_unknown(
    raw: dict[str, Any], known: frozenset[str], base: dict[str, Any]
) -> dict[str, Any]:
    """``base`` plus every field of ``raw`` not in ``known``; a clash goes under _browser."""
    out = dict(base)
    for name, value in raw.items():
        if name in known:
            continue
        if name in out:
            out.setdefault(COLLISIONS, {})[name] = value
        else:
            out[name] = value
    return out


def _metadata(raw: dict[str, Any], name: str = "metadata") -> dict[str, Any]:
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ItemError(f"/{name}", f"{name} must be an object")
    return value


TASK_FIELDS = frozenset(
    {"id", "title", "description", "status", "priority", "environmentId", "agentId", "tags",
     "metadata", "createdAt", "updatedAt", "completedAt"}
)


def map_task(raw: Any, validator: MemoryValidator) -> Item:
    source_id = _source_id(raw)
    title = _checked("title", lambda: check_text(raw.get("title"), "title", MAX_TITLE, required=True))
    description = _checked(
        "description", lambda: check_text(raw.get("description"), "description", MAX_TEXT)
    )
    status_name = raw.get("status", "todo")
    if not isinstance(status_name, str) or status_name not in UI_STATUS:
        raise ItemError("/status", f"unknown status {status_name!r}; known: {sorted(UI_STATUS)}")
    priority_name = raw.get("priority", "medium")
    if not isinstance(priority_name, str) or priority_name not in UI_PRIORITY:
        raise ItemError("/priority", f"unknown priority {priority_name!r}")
    agent = _checked("agentId", lambda: check_text(raw.get("agentId"), "agentId", 256))
    tags = _checked("tags", lambda: check_tags(raw.get("tags") or [], "tags"))
    env = raw.get("environmentId")
    if env is not None and (isinstance(env, bool) or not isinstance(env, str | int)):
        raise ItemError("/environmentId", "environmentId must be a string or an integer")
    metadata = _with_unknown(raw, TASK_FIELDS, _metadata(raw))
    _checked("metadata", lambda: check_json_object(metadata, "metadata"))
    created = _millis(raw, "createdAt")
    status = UI_STATUS[status_name]
    completed = _millis(raw, "completedAt")
    if status in ("completed", "failed", "cancelled") and completed is None:
        completed = _millis(raw, "updatedAt") or created
    fields = {
        "title": title,
        "description": description,
        "status": status,
        "priority": UI_PRIORITY[priority_name],
        "agent_id": agent,
        "tags": tags,
        "metadata": metadata,
        "created_at": created,
        "updated_at": _millis(raw, "updatedAt") or created,
        "completed_at": completed if status in ("completed", "failed", "cancelled") else None,
    }
    return Item(
        "task", source_id, "", "", fields, _source_hash(raw),
        environment_source=None if env is None else str(env),
    )


ENVIRONMENT_FIELDS = frozenset(
    {"id", "name", "description", "config", "variables", "secrets", "isActive", "createdAt",
     "updatedAt"}
)


def map_environment(raw: Any, validator: MemoryValidator) -> Item:
    source_id = _source_id(raw)
    name = _checked("name", lambda: check_text(raw.get("name"), "name", MAX_NAME, required=True))
    description = _checked(
        "description", lambda: check_text(raw.get("description"), "description", MAX_TEXT)
    )
    config = dict(_metadata(raw, "config"))
    variables = _metadata(raw, "variables")
    if variables:
        config["variables"] = {**config.get("variables", {}), **variables}
    unknown = _with_unknown(raw, ENVIRONMENT_FIELDS, {})
    if unknown:
        config["metadata"] = {**config.get("metadata", {}), **unknown}
    _checked("config", lambda: check_json_object(config, "config"))
    secrets = _checked("secrets", lambda: check_secrets(raw.get("secrets") or {}, "secrets"))
    active = raw.get("isActive", True)
    if not isinstance(active, bool):
        raise ItemError("/isActive", "isActive must be true or false")
    created = _millis(raw, "createdAt")
    fields = {
        "name": name,
        "description": description,
        "config": config,
        "is_active": active,
        "created_at": created,
        "updated_at": _millis(raw, "updatedAt") or created,
    }
    clean = {k: v for k, v in secrets.items() if v is not None}
    return Item("environment", source_id, "", "", fields, _source_hash(raw), secrets=clean)


MEMORY_FIELDS = frozenset(
    {"id", "content", "userId", "agentId", "runId", "namespace", "metadata", "importance",
     "createdAt", "updatedAt", "expiresAt"}
)
SCOPES = {"userId": "user_id", "agentId": "agent_id", "runId": "run_id", "namespace": "namespace"}


def map_memory(raw: Any, validator: MemoryValidator) -> Item:
    source_id = _source_id(raw)
    content = _checked("content", lambda: validator.check_content(raw.get("content")))
    scope: dict[str, str | None] = {}
    for name, column in SCOPES.items():
        scope[column] = _checked(name, partial(check_text, raw.get(name), name, 256))
        if scope[column] == "":
            raise ItemError(f"/{name}", f"{name} must not be empty")
    metadata = _with_unknown(raw, MEMORY_FIELDS, _metadata(raw))
    _checked("metadata", lambda: validator.check_metadata(metadata))
    importance = _checked(
        "importance", lambda: validator.check_importance(raw.get("importance", 0.5))
    )
    created = _millis(raw, "createdAt")
    expires = _millis(raw, "expiresAt")
    if expires is not None and expires <= datetime.now(UTC):
        raise ItemError("/expiresAt", "expiresAt is in the past: the memory has expired")
    fields = {
        "content": content,
        **scope,
        "metadata": metadata,
        "importance": importance,
        "created_at": created,
        "updated_at": _millis(raw, "updatedAt") or created,
        "expires_at": expires,
    }
    return Item("memory", source_id, "", "", fields, _source_hash(raw))


MAPPERS: dict[str, Callable[[Any, MemoryValidator], Item]] = {
    "environments": map_environment,
    "tasks": map_task,
    "memories": map_memory,
}
