"""Request and response bodies of the HTTP API (msgspec structs).

Types and ranges are checked here while decoding; rules that need settings or
the database (dimension, size limits, duplicates) are checked by the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from memory_service.memories.models import (
    HistoryEntry,
    Memory,
    MemoryPatch,
    NewMemory,
    Scope,
)

ScopeValue = Annotated[str, Meta(min_length=1, max_length=256)]


class Strict(Struct, forbid_unknown_fields=True):
    """Unknown fields are an error: a typo must not be silently ignored."""


# -- tenants ---------------------------------------------------------------------------
class TenantCreate(Strict):
    name: Annotated[str, Meta(min_length=1, max_length=200)]


class TenantCreated(Struct):
    id: str
    name: str
    api_key: str


class KeyCreated(Struct):
    api_key: str


# -- memories --------------------------------------------------------------------------
class MemoryCreate(Strict):
    content: str
    user_id: ScopeValue | None = None
    agent_id: ScopeValue | None = None
    run_id: ScopeValue | None = None
    namespace: ScopeValue | None = None
    metadata: dict[str, Any] = {}
    importance: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    expires_at: datetime | None = None
    embedding: list[float] | None = None
    context: Annotated[
        str | None,
        Meta(
            description="Text that situates the memory (a date, the surrounding conversation). "
            "It is indexed for keyword search and embedded after the content, but is not "
            "part of the content."
        ),
    ] = None
    dedupe: Annotated[
        bool | None,
        Meta(
            description="Semantic dedupe: when a live memory of exactly this scope has cosine "
            "similarity >= dedupe_threshold, merge into it (metadata merged, last-seen time, "
            "a history entry) instead of inserting. Unset: the tenant's default "
            "(PUT /v1/settings)."
        ),
    ] = None
    dedupe_threshold: Annotated[
        float,
        Meta(gt=0.0, le=1.0, description="Cosine similarity for dedupe; unset: tenant default"),
    ] | None = None

    def to_domain(self) -> NewMemory:
        return NewMemory(
            content=self.content,
            scope=Scope(self.user_id, self.agent_id, self.run_id, self.namespace),
            metadata=self.metadata,
            importance=self.importance,
            expires_at=self.expires_at,
            embedding=self.embedding,
            context=self.context,
            dedupe=self.dedupe,
            dedupe_threshold=self.dedupe_threshold,
        )


class MemoryBatchCreate(Strict):
    items: list[MemoryCreate]


class MemoryUpdate(Strict):
    content: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    importance: Annotated[float, Meta(ge=0.0, le=1.0)] | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET

    def to_domain(self) -> MemoryPatch:
        return MemoryPatch(
            content=None if self.content is UNSET else self.content,
            metadata=None if self.metadata is UNSET else self.metadata,
            importance=None if self.importance is UNSET else self.importance,
            expires_at=None if isinstance(self.expires_at, UnsetType) else self.expires_at,
            clear_expiry=self.expires_at is None,
        )


class MemoryOut(Struct):
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
    # only on memories named by a key (PUT /v1/memories/by-key/{namespace}/{key})
    key: str | UnsetType = UNSET
    embedding: list[float] | UnsetType = UNSET

    @classmethod
    def of(cls, m: Memory, *, with_embedding: bool = False) -> MemoryOut:
        return cls(
            id=m.id,
            content=m.content,
            user_id=m.user_id,
            agent_id=m.agent_id,
            run_id=m.run_id,
            namespace=m.namespace,
            metadata=m.metadata,
            importance=round(m.importance, 6),
            created_at=m.created_at,
            updated_at=m.updated_at,
            expires_at=m.expires_at,
            version=m.version,
            key=UNSET if m.key is None else m.key,
            embedding=(
                [float(x) for x in m.embedding]
                if with_embedding and m.embedding is not None
                else UNSET
            ),
        )


class MemoryBatchOut(Struct):
    items: list[MemoryOut]


class MemoryPage(Struct):
    items: list[MemoryOut]
    next_cursor: str | None


class Deleted(Struct):
    deleted: int


class HistoryOut(Struct):
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_content: str | None
    new_content: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    at: datetime
    version: int

    @classmethod
    def of(cls, h: HistoryEntry) -> HistoryOut:
        return cls(
            event=h.event,  # type: ignore[arg-type]
            old_content=h.old_content,
            new_content=h.new_content,
            old_metadata=h.old_metadata,
            new_metadata=h.new_metadata,
            at=h.at,
            version=h.version,
        )


class HistoryPage(Struct):
    items: list[HistoryOut]


class Health(Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)
