"""Memories named by a client key: upsert, read and delete by namespace and key.

Agent stores (LangGraph's ``BaseStore`` among them) name an item by a namespace
path and a key. ``KeyedMemories`` gives them that on top of ``MemoryService``:
``(namespace, key)`` names at most one live memory per tenant, a put replaces it
(re-embedding its content, ``version`` + 1, a history entry), and namespaces
list by prefix, suffix and depth, with ``.`` separating a namespace's labels.
A keyed memory is an ordinary memory otherwise: it is found by search, listed,
patched and deleted by id like any other.
"""

from __future__ import annotations

import uuid
from typing import Any

from memory_service.errors import FieldError, InvalidInput, NotFound, PreconditionFailed
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import Page
from memory_service.memories import repository as repo
from memory_service.memories.models import Memory, NewMemory, Scope
from memory_service.memories.service import MemoryService

MAX_KEY_LENGTH = 512
MAX_NAMESPACE_LIMIT = 1000
SEPARATOR = "."


def check_name(value: str, field: str, limit: int) -> str:
    if not value or len(value) > limit or "\x00" in value or "/" in value:
        raise InvalidInput(
            f"{field} must be 1 to {limit} characters without '/' or NUL",
            errors=[FieldError(field, "invalid name")],
        )
    return value


class KeyedMemories:
    def __init__(self, memories: MemoryService) -> None:
        self.memories = memories

    async def put(
        self,
        tenant_id: uuid.UUID,
        namespace: str,
        key: str,
        item: NewMemory,
        if_match: int | None = None,
    ) -> tuple[Memory, bool]:
        """Create or replace the memory ``namespace``/``key``; returns it and whether it
        was created. ``if_match`` must equal the current version (412 otherwise)."""
        check_name(namespace, "namespace", 256)
        check_name(key, "key", MAX_KEY_LENGTH)
        item.scope = Scope(item.scope.user_id, item.scope.agent_id, item.scope.run_id, namespace)
        prepared = self.memories.validate.prepare(item, "")
        prepared["key"] = key
        if prepared["embedding"] is None:
            text = prepared["content"] + ("\n" + prepared["context"] if prepared["context"] else "")
            prepared["embedding"] = (await self.memories.embedder.embed_async([text]))[0]
        tid = tenant_id
        async with wrap_db_errors(), self.memories.pool.connection() as conn, conn.transaction():
            if if_match is not None:
                current = await repo.get_by_key(conn, tid, namespace, key, for_update=True)
                if current is None or current.version != if_match:
                    have = "absent" if current is None else f"at version {current.version}"
                    raise PreconditionFailed(f"memory {namespace}/{key} is {have}, not {if_match}")
            memory, created = await repo.upsert_by_key(conn, tid, prepared)
        memory.embedding = prepared["embedding"]
        for listener in self.memories.listeners:
            await listener(tenant_id, [memory], [])
        return memory, created

    async def get(
        self, tenant_id: uuid.UUID, namespace: str, key: str, *, with_embedding: bool = False
    ) -> Memory:
        check_name(namespace, "namespace", 256)
        check_name(key, "key", MAX_KEY_LENGTH)
        async with wrap_db_errors(), self.memories.pool.connection() as conn:
            memory = await repo.get_by_key(
                conn, tenant_id, namespace, key, with_embedding=with_embedding
            )
        if memory is None:
            raise NotFound(f"memory {namespace}/{key} not found")
        return memory

    async def delete(self, tenant_id: uuid.UUID, namespace: str, key: str) -> None:
        check_name(namespace, "namespace", 256)
        check_name(key, "key", MAX_KEY_LENGTH)
        async with wrap_db_errors(), self.memories.pool.connection() as conn, conn.transaction():
            memory_id = await repo.delete_by_key(conn, tenant_id, namespace, key)
        if memory_id is None:
            raise NotFound(f"memory {namespace}/{key} not found")
        for listener in self.memories.listeners:
            await listener(tenant_id, [], [memory_id])

    async def namespaces(
        self,
        tenant_id: uuid.UUID,
        *,
        prefix: str | None = None,
        suffix: str | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[tuple[str, int]]:
        """Namespaces with their memory counts, in byte order, cut to ``max_depth`` labels."""
        if not 1 <= limit <= MAX_NAMESPACE_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_NAMESPACE_LIMIT}",
                errors=[FieldError("limit", f"1..{MAX_NAMESPACE_LIMIT}")],
            )
        if max_depth is not None and max_depth < 1:
            raise InvalidInput("max_depth must be at least 1", errors=[FieldError("max_depth", ">= 1")])
        after = self._after(tenant_id, cursor, prefix, suffix, max_depth)
        async with wrap_db_errors(), self.memories.pool.connection() as conn:
            rows = await repo.list_namespaces(
                conn,
                tenant_id,
                prefix=prefix,
                suffix=suffix,
                max_depth=max_depth,
                after=after,
                limit=limit + 1,
                separator=SEPARATOR,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            kind = _listing(prefix, suffix, max_depth)
            next_cursor = self.memories.cursors.encode(kind, tenant_id, rows[-1][0])
        return Page(rows, next_cursor)

    def _after(
        self,
        tenant_id: uuid.UUID,
        cursor: str | None,
        prefix: str | None,
        suffix: str | None,
        max_depth: int | None,
    ) -> str | None:
        if not cursor:
            return None
        position: Any = self.memories.cursors.decode(
            cursor, _listing(prefix, suffix, max_depth), tenant_id
        )
        if not isinstance(position, str):
            raise InvalidInput("cursor is not valid for this listing")
        return position


def _listing(prefix: str | None, suffix: str | None, max_depth: int | None) -> str:
    """The cursor kind: a cursor only continues the listing it came from."""
    return f"namespaces|{prefix or ''}|{suffix or ''}|{max_depth or 0}"
