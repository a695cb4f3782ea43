"""Events: ingest a batch, list with filters and a cursor, stream live over SSE.

``GET /v1/events/stream`` sends each event as ``id: <sequence>`` plus a JSON
``data:`` line, and a comment line as heartbeat while nothing happens. A client
that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) resumes right
after that event; without it the stream starts with events newer than the
connection.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from msgspec import Struct

from api.schemas import Strict
from memory_service.errors import FieldError, InvalidInput
from memory_service.events import Event, EventQuery, EventService, NewEvent, parse_event_id

Severity = Literal["debug", "info", "warn", "error"]


class EventIn(Strict):
    type: str
    severity: Severity = "info"
    source: str | None = None
    ts: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    task_id: str | None = None
    execution_id: str | None = None
    agent_id: str | None = None
    duration_ms: float | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_domain(self) -> NewEvent:
        return NewEvent(**{f: getattr(self, f) for f in self.__struct_fields__})


class EventBatch(Strict):
    items: list[EventIn] | None = None
    events: list[EventIn] | None = None  # accepted as a synonym of items


class EventOut(Struct):
    id: str
    sequence: int  # numbered per tenant: 1, 2, 3, ... in commit order
    type: str
    severity: str
    source: str | None
    ts: datetime
    received_at: datetime
    trace_id: str | None
    span_id: str | None
    task_id: str | None
    execution_id: str | None
    agent_id: str | None
    duration_ms: float | None
    attributes: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            e.id,
            e.number,
            e.type,
            e.severity,
            e.source,
            e.ts,
            e.received_at,
            e.trace_id,
            e.span_id,
            e.task_id,
            e.execution_id,
            e.agent_id,
            e.duration_ms,
            e.attributes,
        )


class EventsOut(Struct):
    items: list[EventOut]


class EventPage(Struct):
    items: list[EventOut]
    next_cursor: str | None


TypeParam = Annotated[
    list[str] | None,
    QueryParameter(description="dotted prefix, repeatable: tool matches tool.call"),
]
SeverityParam = Annotated[Severity | None, QueryParameter(description="minimum severity")]
IdParam = Annotated[str | None, QueryParameter(max_length=256)]
TimeParam = Annotated[datetime | None, QueryParameter()]


def _query(
    type: list[str] | None,
    min_severity: str | None,
    task_id: str | None,
    execution_id: str | None,
    agent_id: str | None,
    since: datetime | None,
    until: datetime | None,
    workflow_run_id: str | None = None,
) -> EventQuery:
    return EventQuery(
        types=list(type or []),
        min_severity=min_severity,
        task_id=task_id,
        execution_id=execution_id,
        agent_id=agent_id,
        since=since,
        until=until,
        workflow_run_id=workflow_run_id,
    ).validate()


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @post("/", status_code=201, summary="Record a batch of up to 1,000 events, all or nothing")
    async def record_events(
        self,
        data: JSONBody[EventBatch | list[EventIn]],
        events: NamedDependency[EventService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> EventsOut:
        if isinstance(data, list):
            items = data
        else:
            if (data.items is None) == (data.events is None):
                raise InvalidInput(
                    "give the events as items", errors=[FieldError("items", "required")]
                )
            items = data.items if data.items is not None else data.events or []
        stored = await events.record(tenant_id, [e.to_domain() for e in items])
        return EventsOut([EventOut.of(e) for e in stored])

    @get("/", summary="List events, oldest first, with filters and a cursor")
    async def list_events(
        self,
        events: NamedDependency[EventService],
        tenant_id: NamedDependency[uuid.UUID],
        type: TypeParam = None,
        min_severity: SeverityParam = None,
        task_id: IdParam = None,
        execution_id: IdParam = None,
        agent_id: IdParam = None,
        since: TimeParam = None,
        until: TimeParam = None,
        workflow_run_id: IdParam = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> EventPage:
        query = _query(
            type, min_severity, task_id, execution_id, agent_id, since, until, workflow_run_id
        )
        page = await events.list(tenant_id, query, limit=limit, cursor=cursor)
        return EventPage([EventOut.of(e) for e in page.items], page.next_cursor)

    @get(
        "/stream",
        summary="Live events as Server-Sent Events; resumable with Last-Event-ID",
        opt={"tenant_slot": "stream"},  # at most MEMORY_TENANT_MAX_STREAMS open per tenant
    )
    async def stream_events(
        self,
        events: NamedDependency[EventService],
        tenant_id: NamedDependency[uuid.UUID],
        type: TypeParam = None,
        min_severity: SeverityParam = None,
        task_id: IdParam = None,
        execution_id: IdParam = None,
        agent_id: IdParam = None,
        since: TimeParam = None,
        until: TimeParam = None,
        workflow_run_id: IdParam = None,
        last_event_id_header: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=32)
        ] = None,
        last_event_id: Annotated[str | None, QueryParameter(max_length=32)] = None,
    ) -> ServerSentEvent:
        query = _query(
            type, min_severity, task_id, execution_id, agent_id, since, until, workflow_run_id
        )
        # an empty Last-Event-ID is a malformed id, not an absent one; both are checked,
        # the header wins
        header = parse_event_id(last_event_id_header)
        in_query = parse_event_id(last_event_id, "last_event_id")
        start = await events.stream_start(tenant_id, header if header is not None else in_query)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            # first bytes at once, so clients and proxies see the stream is open
            yield ServerSentEventMessage(data=None, comment="stream open", retry=2000)
            async for event in events.stream(tenant_id, query, start):
                if event is None:
                    yield ServerSentEventMessage(data=None, comment="heartbeat")
                else:
                    yield ServerSentEventMessage(
                        data=msgspec.json.encode(EventOut.of(event)).decode(),
                        id=event.number,
                    )

        return ServerSentEvent(
            messages(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
