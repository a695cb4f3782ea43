"""The live event tail: the newest events rendered on the server, then Server-Sent Events.

The page lists the newest matching events (readable without JavaScript) and
hands the browser the sequence number of the last one. The browser's
``EventSource`` opens ``/console/events/stream`` after that number; when the
connection drops it reconnects with ``Last-Event-ID``, and the event service
resumes exactly after the last event delivered, so nothing is lost or repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template

from api.console.rendering import page
from api.routes.events import EventOut
from memory_service.events import EventQuery, EventService, parse_event_id

SEVERITIES = ("debug", "info", "warn", "error")
RECENT = 50


def _query(type: str | None, min_severity: str | None, task_id: str | None) -> EventQuery:
    types = [t.strip() for t in (type or "").split(",") if t.strip()]
    return EventQuery(
        types=types, min_severity=min_severity or None, task_id=(task_id or "").strip() or None
    ).validate()


class EventPagesController(Controller):
    path = "/events"
    include_in_schema = False

    @get("/")
    async def tail_page(
        self,
        request: Request[Any, Any, Any],
        events: NamedDependency[EventService],
        tenant_id: NamedDependency[uuid.UUID],
        type: FromQuery[str | None] = None,
        min_severity: FromQuery[str | None] = None,
        task_id: FromQuery[str | None] = None,
    ) -> Template:
        query = _query(type, min_severity, task_id)
        recent = await events.recent(tenant_id, query, RECENT)
        # the stream starts after the newest event shown, or after "now" when none is;
        # positions are the tenant's own event numbers, as in the public stream
        after = recent[-1].number if recent else await events.last_number(tenant_id)
        filters = {"type": type or "", "min_severity": min_severity or "", "task_id": task_id or ""}
        return page(
            request,
            "events/tail.html",
            active="events",
            events=list(reversed(recent)),
            after=after,
            filters=filters,
            severities=SEVERITIES,
        )

    @get("/stream")
    async def stream(
        self,
        events: NamedDependency[EventService],
        tenant_id: NamedDependency[uuid.UUID],
        type: FromQuery[str | None] = None,
        min_severity: FromQuery[str | None] = None,
        task_id: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=32)
        ] = None,
    ) -> ServerSentEvent:
        query = _query(type, min_severity, task_id)
        header = parse_event_id(last_event_id or None)  # the browser resends it on reconnect
        in_query = parse_event_id(after, "after")
        start = await events.stream_start(tenant_id, header if header is not None else in_query)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            yield ServerSentEventMessage(data=None, comment="stream open", retry=1000)
            async for event in events.stream(tenant_id, query, start):
                if event is None:
                    yield ServerSentEventMessage(data=None, comment="heartbeat")
                else:
                    body = msgspec.json.encode(EventOut.of(event)).decode()
                    yield ServerSentEventMessage(data=body, id=event.number)

        return ServerSentEvent(
            messages(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
