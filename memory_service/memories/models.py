"""Value types of the memory domain: what the service takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from memory_service.embedding.embeddings import Vector

SCOPE_FIELDS = ("user_id", "agent_id", "run_id", "namespace")


@dataclass(frozen=True, slots=True)
class Scope:
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    namespace: str | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k in SCOPE_FIELDS if (v := getattr(self, k)) is not None}


@dataclass(slots=True)
class NewMemory:
    content: str
    scope: Scope = field(default_factory=Scope)
    metadata: dict[str, Any] = field(default_factory=dict)
    importance: float = 0.5
    expires_at: datetime | None = None
    embedding: list[float] | None = None
    # searchable text that situates the memory (indexed and embedded with content)
    context: str | None = None
    dedupe: bool | None = None  # None: the tenant's default
    dedupe_threshold: float | None = None


@dataclass(slots=True)
class MemoryPatch:
    content: str | None = None
    metadata: dict[str, Any] | None = None
    importance: float | None = None
    expires_at: datetime | None = None
    clear_expiry: bool = False  # "expires_at": null removes the expiry


@dataclass(slots=True)
class Memory:
    id: str
    content: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    namespace: str | None
    metadata: dict[str, Any]
    importance: float
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    version: int
    embedding: Vector | None = None
    seq: int = 0  # internal keyset position; never shown to clients
    key: str | None = None  # the client's name for it within its namespace
    context: str | None = None  # searchable text situating the content (never shown)


@dataclass(slots=True)
class HistoryEntry:
    event: str
    old_content: str | None
    new_content: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    at: datetime
    version: int


@dataclass(slots=True)
class SearchRequest:
    query: str | None = None
    embedding: list[float] | None = None
    k: int = 10
    scope: Scope = field(default_factory=Scope)
    filter: dict[str, Any] | None = None
    mode: str | None = None  # None: the service's default ranking (SearchService.mode_for)
    min_score: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # mode-specific extras
    # "eventual": another process's write shows within about a second (this process's
    # own at once); "strong": re-read from PostgreSQL first, so every commit shows
    consistency: str = "eventual"


@dataclass(slots=True)
class SearchHit:
    memory: Memory
    score: float
    components: dict[str, float] | None = None


@dataclass(slots=True)
class SearchGroup:
    key: Any  # the grouping value (a scope field's or a metadata value); None: ungrouped
    score: float
    hits: list[SearchHit]


@dataclass(slots=True)
class SearchResult:
    results: list[SearchHit]
    took_ms: float
    strategy: str
    groups: list[SearchGroup] | None = None  # with group_by: results are their members


def as_vector(values: Any) -> Vector:
    return np.asarray(values, dtype=np.float32)
