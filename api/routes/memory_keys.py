"""Memories by namespace and key: PUT (upsert), GET and DELETE, and the namespace listing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Response, delete, get, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from msgspec import Meta, Struct

from api.consistency import STANDBY_READS
from api.routes.memories import parse_if_match
from api.schemas import MemoryOut, ScopeValue, Strict
from memory_service.errors import FieldError, InvalidInput
from memory_service.memories.keyed import KeyedMemories
from memory_service.memories.models import NewMemory, Scope


class KeyedMemoryPut(Strict):
    content: str
    user_id: ScopeValue | None = None
    agent_id: ScopeValue | None = None
    run_id: ScopeValue | None = None
    metadata: dict[str, Any] = {}
    importance: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    expires_at: datetime | None = None
    embedding: list[float] | None = None
    context: str | None = None

    def to_domain(self) -> NewMemory:
        return NewMemory(
            content=self.content,
            scope=Scope(self.user_id, self.agent_id, self.run_id),
            metadata=self.metadata,
            importance=self.importance,
            expires_at=self.expires_at,
            embedding=self.embedding,
            context=self.context,
        )


class NamespaceOut(Struct):
    namespace: str
    count: int


class NamespacePage(Struct):
    items: list[NamespaceOut]
    next_cursor: str | None


def _with_etag(memory: Any, status_code: int = 200) -> Response[MemoryOut]:
    return Response(
        MemoryOut.of(memory), status_code=status_code, headers={"ETag": f'"{memory.version}"'}
    )


class KeyedMemoryController(Controller):
    path = "/memories"
    tags = ["memories"]

    @put(
        "/by-key/{namespace:str}/{key:str}",
        summary="Create (201) or replace (200) the memory named by namespace and key",
        responses={201: ResponseSpec(data_container=MemoryOut, description="Created")},
    )
    async def put_by_key(
        self,
        namespace: FromPath[str],
        key: FromPath[str],
        data: JSONBody[KeyedMemoryPut],
        keyed_memories: NamedDependency[KeyedMemories],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)] = None,
    ) -> Response[MemoryOut]:
        memory, created = await keyed_memories.put(
            tenant_id, namespace, key, data.to_domain(), parse_if_match(if_match)
        )
        return _with_etag(memory, 201 if created else 200)

    @get(
        "/by-key/{namespace:str}/{key:str}",
        summary="Get the memory named by namespace and key",
        opt=STANDBY_READS,
    )
    async def get_by_key(
        self,
        namespace: FromPath[str],
        key: FromPath[str],
        keyed_memories: NamedDependency[KeyedMemories],
        tenant_id: NamedDependency[uuid.UUID],
        include: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> Response[MemoryOut]:
        if include not in (None, "embedding"):
            raise InvalidInput(
                "include takes only 'embedding'", errors=[FieldError("include", "unknown value")]
            )
        with_embedding = include == "embedding"
        memory = await keyed_memories.get(
            tenant_id, namespace, key, with_embedding=with_embedding
        )
        return Response(
            MemoryOut.of(memory, with_embedding=with_embedding),
            headers={"ETag": f'"{memory.version}"'},
        )

    @delete(
        "/by-key/{namespace:str}/{key:str}",
        status_code=204,
        summary="Delete the memory named by namespace and key",
    )
    async def delete_by_key(
        self,
        namespace: FromPath[str],
        key: FromPath[str],
        keyed_memories: NamedDependency[KeyedMemories],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> None:
        await keyed_memories.delete(tenant_id, namespace, key)

    @get(
        "/namespaces",
        summary="Namespaces ('.' separates labels) by prefix, suffix and depth, with counts",
    )
    async def list_namespaces(
        self,
        keyed_memories: NamedDependency[KeyedMemories],
        tenant_id: NamedDependency[uuid.UUID],
        prefix: Annotated[str | None, QueryParameter(max_length=256)] = None,
        suffix: Annotated[str | None, QueryParameter(max_length=256)] = None,
        max_depth: Annotated[int | None, QueryParameter(ge=1, le=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> NamespacePage:
        page = await keyed_memories.namespaces(
            tenant_id,
            prefix=prefix,
            suffix=suffix,
            max_depth=max_depth,
            limit=limit,
            cursor=cursor,
        )
        return NamespacePage([NamespaceOut(ns, n) for ns, n in page.items], page.next_cursor)
