"""Memories: add, batch, get, patch, delete, list, delete by scope, history, search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from api.consistency import STANDBY_READS
from api.dependencies import runtime_of, tenant_of
from api.input_guard import decode_json_text
from api.schemas import (
    Deleted,
    HistoryOut,
    HistoryPage,
    MemoryBatchCreate,
    MemoryBatchOut,
    MemoryCreate,
    MemoryOut,
    MemoryPage,
    MemoryUpdate,
)
from api.search_schemas import SearchBody, SearchOut
from memory_service.errors import FieldError, InvalidInput
from memory_service.memories.as_of import MemoriesAsOf
from memory_service.memories.models import Scope
from memory_service.memories.service import MemoryService

ScopeParam = Annotated[str | None, QueryParameter(max_length=256)]
PurgeParam = Annotated[
    bool,
    QueryParameter(
        description="Erase the past too: every version (as_of reads), the history, the change "
        "feed's bodies and the in-process index data and snapshots; only the fact that an "
        "erasure happened is kept. Also erases a memory deleted earlier without it"
    ),
]
AsOfParam = Annotated[
    datetime | None,
    QueryParameter(description="RFC 3339: answer from the memories as they stood then"),
]


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(
            "If-Match must be a version number",
            errors=[FieldError("If-Match", "a version number")],
        )
    return int(text)


def parse_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = decode_json_text(raw, "filter")
    if not isinstance(value, dict):
        raise InvalidInput("filter must be a JSON object", errors=[FieldError("filter", "object")])
    return value


class MemoryController(Controller):
    path = "/memories"
    tags = ["memories"]

    @post(
        "/",
        summary="Add a memory (an exact duplicate in the same scope returns 200)",
        status_code=201,
        responses={
            200: ResponseSpec(
                data_container=MemoryOut,
                description="An exact duplicate (same normalised content, scope and metadata): "
                "the existing memory",
            )
        },
    )
    async def add_memory(
        self,
        data: JSONBody[MemoryCreate],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[MemoryOut]:
        memory, created = await memories.add(tenant_id, data.to_domain())
        return Response(MemoryOut.of(memory), status_code=201 if created else 200)

    @post("/batch", status_code=201, summary="Add up to 1,000 memories, all or nothing")
    async def add_batch(
        self,
        data: JSONBody[MemoryBatchCreate],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> MemoryBatchOut:
        items, _ = await memories.add_many(tenant_id, [i.to_domain() for i in data.items])
        return MemoryBatchOut([MemoryOut.of(m) for m in items])

    @post(
        "/search",
        status_code=200,
        summary="Semantic, keyword or hybrid search",
        opt=STANDBY_READS,
    )
    async def search(self, data: JSONBody[SearchBody], request: Request[Any, Any, Any]) -> SearchOut:
        # the hot path reads its service and tenant off the request (see api/dependencies.py)
        runtime, tenant_id = runtime_of(request), tenant_of(request)
        if data.as_of is not None:
            past = await runtime.memories_as_of.search(tenant_id, data.to_domain(), data.as_of)
            return SearchOut.of(past)
        return SearchOut.of(await runtime.search.search(tenant_id, data.to_domain()))

    @get("/", summary="List memories in a scope, oldest first, with a cursor", opt=STANDBY_READS)
    async def list_memories(
        self,
        memories: NamedDependency[MemoryService],
        memories_as_of: NamedDependency[MemoriesAsOf],
        tenant_id: NamedDependency[uuid.UUID],
        user_id: ScopeParam = None,
        agent_id: ScopeParam = None,
        run_id: ScopeParam = None,
        namespace: ScopeParam = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
        filter: Annotated[
            str | None,
            QueryParameter(description="a filter-language JSON object", max_length=8192),
        ] = None,
        as_of: AsOfParam = None,
    ) -> MemoryPage:
        if as_of is not None:
            scope = Scope(user_id, agent_id, run_id, namespace)
            past = await memories_as_of.list_memories(
                tenant_id, scope, as_of, limit=limit, cursor=cursor, filter=parse_filter(filter)
            )
            return MemoryPage([MemoryOut.of(m) for m in past.items], past.next_cursor)
        page = await memories.list_memories(
            tenant_id,
            Scope(user_id, agent_id, run_id, namespace),
            limit=limit,
            cursor=cursor,
            filter=parse_filter(filter),
        )
        return MemoryPage([MemoryOut.of(m) for m in page.items], page.next_cursor)

    @delete("/", status_code=200, summary="Delete every memory in a scope")
    async def delete_scope(
        self,
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
        user_id: ScopeParam = None,
        agent_id: ScopeParam = None,
        run_id: ScopeParam = None,
        namespace: ScopeParam = None,
        purge: PurgeParam = False,
    ) -> Deleted:
        count = await memories.delete_scope(
            tenant_id, Scope(user_id, agent_id, run_id, namespace), purge=purge
        )
        return Deleted(count)

    @get(
        "/{memory_id:str}",
        summary="Get a memory; ?include=embedding adds its vector",
        opt=STANDBY_READS,
    )
    async def get_memory(
        self,
        memory_id: FromPath[str],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
        memories_as_of: NamedDependency[MemoriesAsOf],
        include: Annotated[str | None, QueryParameter(max_length=64)] = None,
        as_of: AsOfParam = None,
    ) -> Response[MemoryOut]:
        wanted = {part.strip() for part in (include or "").split(",") if part.strip()}
        if wanted - {"embedding"}:
            raise InvalidInput(
                "include takes only 'embedding'", errors=[FieldError("include", "unknown value")]
            )
        with_embedding = "embedding" in wanted
        if as_of is not None:
            memory = await memories_as_of.get(
                tenant_id, memory_id, as_of, with_embedding=with_embedding
            )
        else:
            memory = await memories.get(tenant_id, memory_id, with_embedding=with_embedding)
        return Response(
            MemoryOut.of(memory, with_embedding=with_embedding),
            headers={"ETag": f'"{memory.version}"'},
        )

    @patch("/{memory_id:str}", summary="Update content, metadata, importance or expiry")
    async def update_memory(
        self,
        memory_id: FromPath[str],
        data: JSONBody[MemoryUpdate],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)] = None,
    ) -> Response[MemoryOut]:
        memory = await memories.update(
            tenant_id, memory_id, data.to_domain(), parse_if_match(if_match)
        )
        return Response(MemoryOut.of(memory), headers={"ETag": f'"{memory.version}"'})

    @delete("/{memory_id:str}", status_code=204, summary="Delete a memory (?purge=true erases it)")
    async def delete_memory(
        self,
        memory_id: FromPath[str],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
        purge: PurgeParam = False,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)] = None,
    ) -> None:
        await memories.delete(tenant_id, memory_id, parse_if_match(if_match), purge=purge)

    @get(
        "/{memory_id:str}/history",
        summary="The ADD/UPDATE/DELETE history of a memory",
        opt=STANDBY_READS,
    )
    async def history(
        self,
        memory_id: FromPath[str],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> HistoryPage:
        entries = await memories.history(tenant_id, memory_id)
        return HistoryPage([HistoryOut.of(h) for h in entries])
