"""The event log: what agents and the service itself report, stored, listed and streamed.

``models`` holds the value types and validation, ``store`` all event SQL,
``service`` the ingest/list/stream operations, ``writer`` the background writer
for the service's own events, ``fanout`` the LISTEN/NOTIFY wake-ups that make
streams live across processes, and ``retention`` the batched clean-up of old
events; ``outbox`` moves the events workflow transitions stage, and ``startup``
starts them all for the runtime.
"""

from memory_service.events.models import SEVERITIES, Event, EventQuery, NewEvent
from memory_service.events.service import EventService, parse_event_id
from memory_service.events.writer import EventWriter

__all__ = ["SEVERITIES", "Event", "EventQuery", "EventService", "EventWriter", "NewEvent", "parse_event_id"]
