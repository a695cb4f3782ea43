"""Typed shapes of what the service returns: ``TypedDict``s over the decoded JSON.

Results stay plain dictionaries (no copying on the hot path, easy to log or
serialise), while type checkers and editors know every field. Timestamps are
RFC 3339 strings as the service sends them.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

T = TypeVar("T")


class FieldError(TypedDict):
    field: str
    message: str


class Problem(TypedDict, total=False):
    type: str
    title: str
    status: int
    detail: str
    trace_id: str
    errors: list[FieldError]


class Page(TypedDict, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Items(TypedDict, Generic[T]):
    items: list[T]


class Memory(TypedDict):
    id: str
    content: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    namespace: str | None
    key: NotRequired[str | None]
    metadata: dict[str, Any]
    importance: float
    created_at: str
    updated_at: str
    expires_at: str | None
    version: int
    embedding: NotRequired[list[float]]


class SearchHit(TypedDict):
    memory: Memory
    score: float
    components: NotRequired[dict[str, float]]


class SearchResponse(TypedDict):
    results: list[SearchHit]
    took_ms: float
    strategy: str


class HistoryEntry(TypedDict):
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_content: str | None
    new_content: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    at: str
    version: int


class Deleted(TypedDict):
    deleted: int


class NamespaceInfo(TypedDict):
    namespace: str
    count: int


class TenantCreated(TypedDict):
    id: str
    name: str
    api_key: str


class KeyCreated(TypedDict):
    api_key: str


class Task(TypedDict):
    id: str
    title: str
    description: str | None
    status: str
    priority: str
    environment_id: str | None
    agent_id: str | None
    tags: list[str]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    completed_at: str | None
    version: int


class Environment(TypedDict):
    id: str
    name: str
    description: str | None
    config: dict[str, Any]
    secrets: list[str]
    is_active: bool
    created_at: str
    updated_at: str
    version: int


class Event(TypedDict):
    id: str
    sequence: int
    type: str
    severity: str
    source: str | None
    ts: str
    received_at: str
    trace_id: str | None
    span_id: str | None
    task_id: str | None
    execution_id: str | None
    agent_id: str | None
    duration_ms: float | None
    attributes: dict[str, Any]


class RetrievalSettings(TypedDict):
    dedupe: bool
    dedupe_threshold: float


class Health(TypedDict):
    status: str
    checks: dict[str, str]


JSON = dict[str, Any]
