"""Memory operations: create, read, update and delete, with history and dedupe.

``MemoryService`` validates input (through ``memories.validation``) against the
configured limits, embeds text off the event loop, writes to PostgreSQL (the
only source of truth) in one transaction per request, and then tells its change
listeners (the in-process indexes, the event log), given at construction, what
changed. Search is ``search.service.SearchService``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.memories import history as history_repo
from memory_service.memories import repository as repo
from memory_service.memories.erasure import Erased, Eraser, PurgeStep, erase_past
from memory_service.memories.filters import compile_filter
from memory_service.memories.models import (
    HistoryEntry,
    Memory,
    MemoryPatch,
    NewMemory,
    Scope,
)
from memory_service.memories.validation import MemoryValidator, content_hash
from memory_service.records.tenants import parse_uuid
from memory_service.retrieval.dedupe import SemanticDedupe

MAX_SCOPE_LENGTH = 256
MAX_LIST_LIMIT = 1000

# (tenant_id, upserted memories with embeddings, deleted ids)
ChangeListener = Callable[[uuid.UUID, list[Memory], list[str]], Awaitable[None]]


class MemoryService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        embedder: CachedEmbedder,
        settings: Settings,
        cursors: CursorCodec,
        validator: MemoryValidator,
        *,
        dedupe: SemanticDedupe | None = None,
        listeners: Sequence[ChangeListener] = (),
        purge_steps: Sequence[PurgeStep] = (),
        erasers: Sequence[Eraser] = (),
    ) -> None:
        self.pool = pool
        self.embedder = embedder
        self.settings = settings
        self.cursors = cursors
        self.dimension = embedder.dimension
        self.validate = validator
        # a step inside an add's transaction that folds near-copies into existing
        # memories: returns {item index: memory or earlier item index}
        self.semantic_dedupe = dedupe
        self.listeners = tuple(listeners)
        # a purge: what other tables keep (in its transaction), and what processes hold
        self.purge_steps = tuple(purge_steps)
        self.erasers = tuple(erasers)
        # batch writes under way (their embedding included): a load is arriving, and
        # pgvector's index worker leaves the cores to it
        self.batches_in_flight = 0

    async def _embed_missing(self, prepared: list[dict[str, Any]]) -> None:
        todo = [p for p in prepared if p["embedding"] is None]
        if todo:
            # a context is embedded after the content it situates
            vectors = await self.embedder.embed_async(
                [p["content"] + ("\n" + p["context"] if p.get("context") else "") for p in todo]
            )
            for p, v in zip(todo, vectors, strict=True):
                p["embedding"] = v

    # -- writes ----------------------------------------------------------------------
    async def add(self, tenant_id: uuid.UUID, item: NewMemory) -> tuple[Memory, bool]:
        """Store one memory; returns it and whether it was created (False: a duplicate)."""
        memories, created = await self.add_many(tenant_id, [item], single=True)
        return memories[0], created[0]

    async def add_many(
        self, tenant_id: uuid.UUID, items: Sequence[NewMemory], *, single: bool = False
    ) -> tuple[list[Memory], list[bool]]:
        """All or nothing: every item is validated before anything is written."""
        if not items:
            raise InvalidInput("items must not be empty", errors=[FieldError("items", "empty")])
        if len(items) > self.settings.max_batch_items:
            raise PayloadTooLarge(
                f"a batch holds at most {self.settings.max_batch_items} items, not {len(items)}",
                errors=[FieldError("items", f"at most {self.settings.max_batch_items}")],
            )
        prepared = [
            self.validate.prepare(item, "" if single else f"items[{i}].")
            for i, item in enumerate(items)
        ]
        if single:
            return await self._write(tenant_id, prepared, single=True)
        self.batches_in_flight += 1
        try:
            return await self._write(tenant_id, prepared, single=False)
        finally:
            self.batches_in_flight -= 1

    async def _write(
        self, tid: uuid.UUID, prepared: list[dict[str, Any]], *, single: bool
    ) -> tuple[list[Memory], list[bool]]:
        await self._embed_missing(prepared)
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            await repo.purge_expired_duplicates(
                conn, tid, list({p["content_hash"] for p in prepared})
            )
            folded: dict[int, Memory | int] = {}
            if self.semantic_dedupe is not None:
                folded = await self.semantic_dedupe(conn, tid, prepared)
            fresh = [p for i, p in enumerate(prepared) if i not in folded]
            # a batch leaves pgvector's graph to the index worker; a single add is cheap
            indexed = single or self.settings.pgvector_index_mode == "inline"
            insert = repo.insert_many if single else repo.insert_staged
            rows = await insert(conn, tid, fresh, indexed=indexed) if fresh else []
            inserted = iter(rows)
            result: list[Memory] = []
            created: list[bool] = []
            for i, p in enumerate(prepared):
                if i in folded:
                    result.append(None)  # type: ignore[arg-type]  # resolved below
                    created.append(False)
                    continue
                row = next(inserted)
                if row is None:
                    row = await repo.find_duplicate(
                        conn, tid, p["content_hash"], p["scope"], p["metadata"]
                    )
                    if row is None:  # pragma: no cover - the conflict row vanished
                        raise Conflict("a concurrent change removed a duplicate; retry")
                    created.append(False)
                else:
                    row.embedding = p["embedding"]
                    created.append(True)
                result.append(row)
            for i, target in folded.items():
                result[i] = result[target] if isinstance(target, int) else target
        new = [m for m, c in zip(result, created, strict=True) if c]
        merged = [m for m in folded.values() if not isinstance(m, int)]
        if new or merged:
            await self._notify(tid, new + merged, [])
        return result, created

    async def update(
        self, tenant_id: uuid.UUID, memory_id: str, patch: MemoryPatch, if_match: int | None
    ) -> Memory:
        tid, mid = tenant_id, parse_uuid(memory_id, "id")
        changes: dict[str, Any] = {}
        new_vector: np.ndarray | None = None
        if patch.content is not None:
            changes["content"] = self.validate.check_content(patch.content)
            changes["content_hash"] = content_hash(patch.content)
            new_vector = (await self.embedder.embed_async([patch.content]))[0]
            changes["embedding"] = new_vector
        if patch.metadata is not None:
            changes["metadata"] = self.validate.check_metadata(patch.metadata)
        if patch.importance is not None:
            changes["importance"] = self.validate.check_importance(patch.importance)
        if patch.clear_expiry:
            changes["expires_at"] = None
        elif patch.expires_at is not None:
            changes["expires_at"] = self.validate.check_expiry(patch.expires_at)
        if not changes:
            raise InvalidInput(
                "nothing to update: give content, metadata, importance or expires_at",
                errors=[FieldError("body", "no updatable field")],
            )
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            current = await repo.get(conn, tid, mid, for_update=True, with_embedding=True)
            if current is None:
                raise NotFound(f"memory {memory_id} not found")
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    f"memory {memory_id} is at version {current.version}, not {if_match}",
                    current=current,
                )
            if "content_hash" in changes or "metadata" in changes:
                dup = await repo.find_duplicate(
                    conn,
                    tid,
                    changes.get("content_hash") or bytes(content_hash(current.content)),
                    _scope_of(current),
                    changes.get("metadata", current.metadata),
                )
                if dup is not None and dup.id != current.id:
                    raise Conflict(
                        f"memory {dup.id} in the same scope already has this content and metadata"
                    )
            updated = await repo.update(conn, tid, mid, changes)
        updated.embedding = new_vector if new_vector is not None else current.embedding
        await self._notify(tenant_id, [updated], [])
        return updated

    async def delete(
        self, tenant_id: uuid.UUID, memory_id: str, if_match: int | None = None, *, purge: bool = False
    ) -> None:
        """Delete a memory; ``purge`` also erases its past (see ``memories.erasure``), and
        erases the past of a memory deleted earlier without it."""
        tid, mid = tenant_id, parse_uuid(memory_id, "id")
        erased: Erased | None = None
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            if if_match is not None:
                current = await repo.get(conn, tid, mid, for_update=True)
                if current is not None and current.version != if_match:
                    raise PreconditionFailed(
                        f"memory {memory_id} is at version {current.version}, not {if_match}",
                        current=current,
                    )
            # a purge takes a memory that has expired (unseen, but still stored) as well
            found = await repo.delete(conn, tid, mid, expired_too=purge)
            if purge:
                erased = await erase_past(
                    conn, tid, [str(mid)], "memory", self.purge_steps, deleted=found
                )
        if not found and erased is None:
            raise NotFound(f"memory {memory_id} not found")
        if found:
            await self._notify(tenant_id, [], [str(mid)])
        if erased is not None:
            await self._erased(tenant_id, erased)

    async def delete_scope(self, tenant_id: uuid.UUID, scope: Scope, *, purge: bool = False) -> int:
        if not scope.given():
            raise InvalidInput(
                "give at least one of user_id, agent_id, run_id, namespace",
                errors=[FieldError("scope", "at least one scope field is required")],
            )
        self.validate.check_scope(scope)
        erased: Erased | None = None
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            ids = await repo.delete_scope(conn, tenant_id, scope)
            if ids and purge:
                erased = await erase_past(
                    conn, tenant_id, ids, "scope", self.purge_steps, deleted=True
                )
        if ids:
            await self._notify(tenant_id, [], ids)
        if erased is not None:
            await self._erased(tenant_id, erased)
        return len(ids)

    async def _erased(self, tenant_id: uuid.UUID, erased: Erased) -> None:
        """After a purge's commit: the query cache forgets the texts, and every eraser
        wipes what this process holds of the vectors."""
        self.embedder.forget(erased.contents)
        for eraser in self.erasers:
            await eraser(tenant_id, set(erased.seqs.values()))

    async def _notify(
        self, tenant_id: uuid.UUID, upserted: list[Memory], deleted: list[str]
    ) -> None:
        for listener in self.listeners:
            await listener(tenant_id, upserted, deleted)

    # -- reads -----------------------------------------------------------------------
    async def get(self, tenant_id: uuid.UUID, memory_id: str, *, with_embedding: bool = False) -> Memory:
        tid, mid = tenant_id, parse_uuid(memory_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn:
            memory = await repo.get(conn, tid, mid, with_embedding=with_embedding)
        if memory is None:
            raise NotFound(f"memory {memory_id} not found")
        return memory

    async def list_memories(
        self,
        tenant_id: uuid.UUID,
        scope: Scope,
        *,
        limit: int = 50,
        cursor: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> Page[Memory]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                errors=[FieldError("limit", f"1..{MAX_LIST_LIMIT}")],
            )
        self.validate.check_scope(scope)
        flt = compile_filter(filter) if filter else None
        after = 0
        if cursor:
            position = self.cursors.decode(cursor, "memories", tenant_id)
            if not isinstance(position, int):
                raise InvalidInput("cursor is not valid for this listing")
            after = position
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await repo.list_page(conn, tenant_id, scope, flt, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            self.cursors.encode("memories", tenant_id, rows[-1].seq) if more and rows else None
        )
        return Page(rows, next_cursor)

    async def history(self, tenant_id: uuid.UUID, memory_id: str) -> list[HistoryEntry]:
        tid, mid = tenant_id, parse_uuid(memory_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn:
            entries = await history_repo.history(conn, tid, mid)
        if not entries:
            raise NotFound(f"memory {memory_id} not found")
        return entries


def _scope_of(memory: Memory) -> Scope:
    return Scope(memory.user_id, memory.agent_id, memory.run_id, memory.namespace)
