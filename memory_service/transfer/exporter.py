"""Export of one tenant as an NDJSON stream (the format is in ``transfer.lines``).

The whole export reads one REPEATABLE READ snapshot, so a tenant written to
while it is exported still exports as it was at one instant. Rows are read in
pages of ``PAGE`` in ``seq`` order and encoded as they go, so memory use stays
flat however large the tenant is. Environments come first and tasks next (tasks
refer to environments), then executions with their steps and checkpoints (forks
after their parents), then memories, then events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from psycopg import sql

from memory_service.events import store as event_store
from memory_service.events.models import EventQuery
from memory_service.executions import copies as executions
from memory_service.infra import rowcopy
from memory_service.infra.secret_box import SecretBox
from memory_service.memories import history as memory_history
from memory_service.memories import repository as memories
from memory_service.memories.rows import to_numpy
from memory_service.records import environments, tasks
from memory_service.transfer.lines import (
    FORMAT,
    FORMAT_VERSION,
    NULL,
    CheckpointLine,
    End,
    EnvironmentLine,
    EventLine,
    ExecutionLine,
    Header,
    HistoryLine,
    MemoryLine,
    Model,
    StepLine,
    TaskLine,
    encode_embedding,
    encode_line,
)

PAGE = 1000
EXPORT_ORDER = ("environment", "task", "execution", "memory", "event")


@dataclass(slots=True)
class ExportOptions:
    types: list[str] = field(
        default_factory=lambda: ["environment", "task", "execution", "memory"]
    )
    include_history: bool = False
    include_secret_values: bool = False
    events_since: datetime | None = None
    events_until: datetime | None = None


async def export_lines(
    conn: Any,
    tenant_id: uuid.UUID,
    options: ExportOptions,
    model: Model,
    service_version: str,
    box: SecretBox | None = None,
) -> AsyncIterator[bytes]:
    """Every line of the export; ``conn`` must be in a read-only snapshot transaction."""
    tid = tenant_id
    types = [t for t in EXPORT_ORDER if t in options.types]
    yield encode_line(
        Header(FORMAT, FORMAT_VERSION, service_version, model, datetime.now(UTC), types)
    )
    counts: dict[str, int] = {}
    writers = {
        "environment": lambda: _environments(conn, tid, options.include_secret_values, box),
        "task": lambda: _tasks(conn, tid),
        "execution": lambda: _executions(conn, tid),
        "memory": lambda: _memories(conn, tid, options.include_history),
        "event": lambda: _events(conn, tid, options),
    }
    for kind in types:
        counts[kind] = 0
        async for chunk, n in writers[kind]():
            counts[kind] += n
            yield chunk
    yield encode_line(End(counts))


async def _pages(
    conn: Any, table: str, tid: uuid.UUID, columns: tuple[str, ...], where: Any = None
) -> AsyncIterator[list[tuple[Any, ...]]]:
    after = 0
    while True:
        rows = await rowcopy.read_page(conn, table, tid, columns, after, PAGE, where=where)
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def _environments(
    conn: Any, tid: uuid.UUID, with_values: bool, box: SecretBox | None
) -> AsyncIterator[tuple[bytes, int]]:
    columns = environments.COPY_COLUMNS
    async for rows in _pages(conn, environments.TABLE, tid, columns):
        out = bytearray()
        for row in rows:
            r = dict(zip(columns, row[1:], strict=True))
            secrets: dict[str, Any] = r["secrets"] or {}
            out += encode_line(
                EnvironmentLine(
                    id=str(r["id"]), name=r["name"], created_at=r["created_at"],
                    updated_at=r["updated_at"], description=r["description"],
                    config=r["config"], is_active=r["is_active"], version=r["version"],
                    secret_names=sorted(secrets),
                    secrets={
                        k: box.open(v) if box else v for k, v in secrets.items() if v is not None
                    }
                    if with_values else None,
                )
            )
        yield bytes(out), len(rows)


async def _tasks(conn: Any, tid: uuid.UUID) -> AsyncIterator[tuple[bytes, int]]:
    columns = tasks.COPY_COLUMNS
    async for rows in _pages(conn, tasks.TABLE, tid, columns):
        out = bytearray()
        for row in rows:
            r = dict(zip(columns, row[1:], strict=True))
            r["id"] = str(r["id"])
            r["environment_id"] = None if r["environment_id"] is None else str(r["environment_id"])
            out += encode_line(TaskLine(**r))
        yield bytes(out), len(rows)


def _raw(text: str | None) -> msgspec.Raw:
    return NULL if text is None else msgspec.Raw(text.encode())


async def _executions(conn: Any, tid: uuid.UUID) -> AsyncIterator[tuple[bytes, int]]:
    columns = executions.COPY_COLUMNS
    async for rows in _pages(conn, executions.TABLE, tid, columns):
        found = [dict(zip(columns, row[1:], strict=True)) for row in rows]
        for r in found:
            for name in ("id", "task_id", "environment_id", "parent_id"):
                r[name] = None if r[name] is None else str(r[name])
        steps, checkpoints = await executions.histories(conn, tid, [r["id"] for r in found])
        out = bytearray()
        for r in found:
            r["steps"] = [
                StepLine(**{**s, "state": _raw(s["state"]), "state_patch": _raw(s["state_patch"])})
                for s in steps.get(r["id"], [])
            ]
            r["checkpoints"] = [CheckpointLine(**c) for c in checkpoints.get(r["id"], [])]
            out += encode_line(ExecutionLine(**r))
        yield bytes(out), len(rows)


MEMORY_EXPORT = tuple(c for c in memories.COPY_COLUMNS if c != "content_hash")
VISIBLE = sql.SQL("(expires_at IS NULL OR expires_at > now())")


async def _memories(conn: Any, tid: uuid.UUID, history: bool) -> AsyncIterator[tuple[bytes, int]]:
    async for rows in _pages(conn, memories.TABLE, tid, MEMORY_EXPORT, VISIBLE):
        found = (
            await memory_history.histories(conn, tid, [str(r[1]) for r in rows]) if history else {}
        )
        out = bytearray()
        for row in rows:
            r = dict(zip(MEMORY_EXPORT, row[1:], strict=True))
            r["id"] = str(r["id"])
            r["embedding"] = encode_embedding(to_numpy(r["embedding"]))
            if history:
                r["history"] = [
                    HistoryLine(e.event, e.old_content, e.new_content, e.old_metadata,
                                e.new_metadata, e.at, e.version)
                    for e in found.get(r["id"], [])
                ]
            out += encode_line(MemoryLine(**r))
        yield bytes(out), len(rows)


async def _events(
    conn: Any, tid: uuid.UUID, options: ExportOptions
) -> AsyncIterator[tuple[bytes, int]]:
    query = EventQuery(since=options.events_since, until=options.events_until)
    after = 0
    while True:
        rows = await event_store.read_after(conn, tid, query, after, PAGE)
        if not rows:
            return
        out = bytearray()
        for e in rows:
            out += encode_line(
                EventLine(
                    type_name=e.type, severity=e.severity, ts=e.ts, source=e.source,
                    trace_id=e.trace_id, span_id=e.span_id, task_id=e.task_id,
                    execution_id=e.execution_id, agent_id=e.agent_id,
                    duration_ms=e.duration_ms, attributes=e.attributes, id=uuid.UUID(e.id),
                )
            )
        yield bytes(out), len(rows)
        after = rows[-1].seq
