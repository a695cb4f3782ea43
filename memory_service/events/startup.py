"""Starting the event log's background parts, in the order they close in reverse."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.events.fanout import EventFanout
from memory_service.events.outbox import OutboxMover
from memory_service.events.retention import RetentionWorker
from memory_service.events.writer import EventWriter
from memory_service.infra.supervisor import Closer, Supervisor


async def start_event_log(
    settings: Settings,
    url: str,
    pool: AsyncConnectionPool,
    supervisor: Supervisor,
    closers: list[Closer],
) -> tuple[EventWriter, EventFanout, RetentionWorker, OutboxMover]:
    fanout = EventFanout(url, supervisor=supervisor, name="event-fanout")
    await fanout.start()
    closers.append(fanout.close)
    writer = EventWriter(
        pool, supervisor=supervisor, linger_s=settings.event_writer_linger_ms / 1000
    )
    writer.start()
    closers.append(writer.close)  # closes before the fan-out and the pool
    retention = RetentionWorker(
        pool,
        retention_seconds=settings.event_retention_seconds,
        interval_seconds=settings.event_retention_interval_seconds,
        batch_size=settings.event_retention_batch,
        supervisor=supervisor,
    )
    retention.start()
    closers.append(retention.close)
    outbox = OutboxMover(
        pool, supervisor=supervisor, poll_interval_s=settings.event_outbox_poll_interval_s
    )
    outbox.start()
    closers.append(outbox.close)  # after the workflows stop staging, before the pool
    return writer, fanout, retention, outbox
