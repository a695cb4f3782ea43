"""The change feed over HTTP: pages, a live SSE stream, and snapshots.

``GET /v1/changes`` pages through changes in commit order; ``/stream`` sends the
same items live as Server-Sent Events whose ``id`` is the item's cursor, so a
reconnect with ``Last-Event-ID`` resumes right after it; ``/snapshot`` streams
the tenant's current entities as NDJSON, first a line with the cursor to follow
the feed from, last a line ``{"end": true, "count": n}`` (a snapshot without it
was cut short). ``include=embedding`` adds a memory's vector as base64 of
little-endian float32 (``embedding_b64``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream
from msgspec import UNSET, Struct, UnsetType

from api.consistency import STANDBY_READS
from memory_service.changes import Change, ChangeFeed, Entity, SnapshotStart, parse_types
from memory_service.errors import FieldError, InvalidInput


class ChangeOut(Struct):
    cursor: str  # resume right after this change
    type: str
    id: str
    op: str  # "upsert" or "delete"
    version: int
    at: datetime
    # the entity as of this change (its API shape); null for a delete
    entity: msgspec.Raw | None
    embedding_b64: str | UnsetType = UNSET

    @classmethod
    def of(cls, c: Change, cursor: str) -> ChangeOut:
        entity = None if c.entity is None else msgspec.Raw(c.entity.encode())
        return cls(cursor, c.type, c.id, c.op, c.version, c.at, entity, _b64(c.embedding))


class ChangePageOut(Struct):
    items: list[ChangeOut]
    next_cursor: str  # always set: the position to ask from next time
    has_more: bool


class SnapshotItemOut(Struct):
    type: str
    id: str
    version: int
    entity: msgspec.Raw
    embedding_b64: str | UnsetType = UNSET


TypesParam = Annotated[
    list[str] | None,
    QueryParameter(description="memory, task, environment (repeatable or comma-separated)"),
]
IncludeParam = Annotated[
    str | None, QueryParameter(description="'embedding' adds memory vectors", max_length=64)
]
CursorParam = Annotated[str | None, QueryParameter(max_length=512)]


def _b64(vector: bytes | None) -> str | UnsetType:
    return UNSET if vector is None else base64.b64encode(vector).decode()


def _with_embedding(include: str | None) -> bool:
    wanted = {part.strip() for part in (include or "").split(",") if part.strip()}
    if wanted - {"embedding"}:
        raise InvalidInput(
            "include takes only 'embedding'", errors=[FieldError("include", "unknown value")]
        )
    return "embedding" in wanted


class ChangeController(Controller):
    path = "/changes"
    tags = ["changes"]

    @get("/", summary="Changes of every entity type in commit order, after a cursor")
    async def list_changes(
        self,
        changes: NamedDependency[ChangeFeed],
        tenant_id: NamedDependency[uuid.UUID],
        since: CursorParam = None,
        types: TypesParam = None,
        limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 100,
        include: IncludeParam = None,
    ) -> ChangePageOut:
        page = await changes.read(
            tenant_id,
            since,
            parse_types(types),
            limit=limit,
            with_embedding=_with_embedding(include),
        )
        items = [ChangeOut.of(c, changes.cursor_of(tenant_id, c.seq)) for c in page.items]
        return ChangePageOut(items, page.cursor, page.has_more)

    @get("/stream", summary="The change feed live over SSE; resumable with Last-Event-ID")
    async def stream_changes(
        self,
        changes: NamedDependency[ChangeFeed],
        tenant_id: NamedDependency[uuid.UUID],
        types: TypesParam = None,
        since: CursorParam = None,
        include: IncludeParam = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=512)
        ] = None,
    ) -> ServerSentEvent:
        wanted = parse_types(types)
        with_embedding = _with_embedding(include)
        resume = last_event_id or since
        after = await changes.position(
            tenant_id, resume, field="Last-Event-ID" if last_event_id else "since"
        )

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            yield ServerSentEventMessage(data=None, comment="stream open", retry=2000)
            async for change in changes.stream(
                tenant_id, after, wanted, with_embedding=with_embedding
            ):
                if change is None:
                    yield ServerSentEventMessage(data=None, comment="heartbeat")
                    continue
                cursor = changes.cursor_of(tenant_id, change.seq)
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(ChangeOut.of(change, cursor)).decode(), id=cursor
                )

        return ServerSentEvent(
            messages(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @get(
        "/snapshot",
        summary="A consistent snapshot of current entities as NDJSON, with the cursor to follow",
        media_type="application/x-ndjson",
        opt=STANDBY_READS,
    )
    async def snapshot(
        self,
        changes: NamedDependency[ChangeFeed],
        tenant_id: NamedDependency[uuid.UUID],
        types: TypesParam = None,
        include: IncludeParam = None,
    ) -> Stream:
        rows = changes.snapshot(
            tenant_id, parse_types(types), with_embedding=_with_embedding(include)
        )
        # the first line is read here, so a database that is down answers 503, not a cut stream
        start = await anext(rows)
        assert isinstance(start, SnapshotStart)

        async def lines() -> AsyncIterator[bytes]:
            count = 0
            yield msgspec.json.encode({"cursor": start.cursor, "types": start.types}) + b"\n"
            async for row in rows:
                assert isinstance(row, Entity)
                item = SnapshotItemOut(
                    row.type,
                    row.id,
                    row.version,
                    msgspec.Raw(row.entity.encode()),
                    _b64(row.embedding),
                )
                yield msgspec.json.encode(item) + b"\n"
                count += 1
            yield msgspec.json.encode({"end": True, "count": count}) + b"\n"

        return Stream(lines(), media_type="application/x-ndjson")
