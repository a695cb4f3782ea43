"""Carrying out a browser-storage plan batch by batch, and undoing a job exactly.

``classify`` decides per browser item, from the tenant's source-id map, whether
it creates a row, overwrites the row an earlier run made of it (the item
changed since), or leaves it alone (unchanged). ``apply_batch`` writes one
batch in the caller's transaction: the rows, a snapshot of every row it
overwrites, the list of rows the job wrote, and the source-id map. ``undo``
reverses a job from that list: it deletes what the job created and puts back
the snapshots of what it overwrote, and touches nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from memory_service.infra import rowcopy
from memory_service.memories import repository as memories
from memory_service.memories.models import Scope
from memory_service.memories.validation import content_hash
from memory_service.records import environments, tasks
from memory_service.transfer import jobs_store
from memory_service.transfer.browser import Item
from memory_service.transfer.jobs_store import Source, WrittenRow

Conn = Any
Embed = Callable[[list[str]], Awaitable[np.ndarray]]
TABLES = {
    "environment": (environments.TABLE, environments.COPY_COLUMNS),
    "task": (tasks.TABLE, tasks.COPY_COLUMNS),
    "memory": (memories.TABLE, memories.COPY_COLUMNS),
}


@dataclass(slots=True)
class Decision:
    item: Item
    action: str  # "create" | "overwrite" | "unchanged"
    row_id: str
    found: Source | None = None
    backup: dict[str, Any] | None = None


@dataclass(slots=True)
class BatchOutcome:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, action: str, n: int = 1) -> None:
        if n:
            self.counts[action] = self.counts.get(action, 0) + n


async def classify(
    conn: Conn, tid: uuid.UUID, entity: str, items: Sequence[Item]
) -> list[Decision]:
    """What each item would do; locks the rows it would overwrite."""
    table, _ = TABLES[entity]
    found = await jobs_store.sources(conn, tid, entity, [i.source_id for i in items])
    by_name: dict[str, str] = {}
    if entity == "environment":
        unmapped = [i.fields["name"] for i in items if i.source_id not in found]
        by_name = await environments.ids_by_name(conn, tid, unmapped) if unmapped else {}
    targets = [f.row_id for f in found.values()] + list(by_name.values())
    current = await rowcopy.snapshot(conn, table, tid, targets)
    out: list[Decision] = []
    for item in items:
        source = found.get(item.source_id)
        target = source.row_id if source else by_name.get(item.fields.get("name", ""))
        if target is None or target not in current:
            out.append(Decision(item, "create", str(uuid.uuid4()), source))
        elif source is not None and source.source_hash == item.source_hash:
            out.append(Decision(item, "unchanged", target, source))
        else:
            out.append(Decision(item, "overwrite", target, source, current[target]))
    return out


def _now() -> datetime:
    return datetime.now(UTC)


def _created(d: Decision) -> datetime:
    """The browser's creation time, else the overwritten row's, else now."""
    if d.item.fields["created_at"] is not None:
        created: datetime = d.item.fields["created_at"]
        return created
    if d.backup is not None:
        return datetime.fromisoformat(d.backup["created_at"])
    return _now()


def _environment_row(d: Decision) -> tuple[Any, ...]:
    f = d.item.fields
    secrets = {**((d.backup or {}).get("secrets") or {}), **d.item.secrets}
    version = int(d.backup["version"]) + 1 if d.backup else 1
    created = _created(d)
    return (
        d.row_id, f["name"], f["description"], Jsonb(f["config"]), Jsonb(secrets),
        f["is_active"], created, f["updated_at"] or _now(), version,
    )


def _task_row(d: Decision, env_ids: dict[str, str]) -> tuple[Any, ...]:
    f = d.item.fields
    env = env_ids[d.item.environment_source] if d.item.environment_source else None
    version = int(d.backup["version"]) + 1 if d.backup else 1
    created = _created(d)
    return (
        d.row_id, f["title"], f["description"], f["status"], f["priority"], env, f["agent_id"],
        f["tags"], Jsonb(f["metadata"]), created, f["updated_at"] or _now(), f["completed_at"],
        version,
    )


def _memory_row(d: Decision, vector: np.ndarray) -> tuple[Any, ...]:
    f = d.item.fields
    version = int(d.backup["version"]) + 1 if d.backup else 1
    created = _created(d)
    return (
        d.row_id, f["content"], content_hash(f["content"]), f["user_id"], f["agent_id"],
        f["run_id"], f["namespace"], Jsonb(f["metadata"]), f["importance"], vector, None,
        created, f["updated_at"] or _now(), f["expires_at"], version,
    )


async def apply_batch(
    conn: Conn,
    tid: uuid.UUID,
    job_id: uuid.UUID,
    entity: str,
    items: Sequence[Item],
    *,
    env_ids: dict[str, str],
    embed: Embed,
) -> BatchOutcome:
    """Write one batch and its bookkeeping; the caller's transaction makes it atomic."""
    table, columns = TABLES[entity]
    decisions = await classify(conn, tid, entity, items)
    todo = [d for d in decisions if d.action != "unchanged"]
    outcome = BatchOutcome()
    outcome.add("unchanged", len(decisions) - len(todo))
    if entity == "memory":
        vectors: Sequence[np.ndarray] = (
            list(await embed([d.item.fields["content"] for d in todo])) if todo else []
        )
        rows = [_memory_row(d, v) for d, v in zip(todo, vectors, strict=True)]
    elif entity == "task":
        rows = [_task_row(d, env_ids) for d in todo]
    else:
        rows = [_environment_row(d) for d in todo]
    creating = [r for r, d in zip(rows, todo, strict=True) if d.action == "create"]
    inserted = await rowcopy.insert_rows(conn, table, tid, columns, creating)
    await rowcopy.update_rows(
        conn, table, tid, columns, [r for r, d in zip(rows, todo, strict=True) if d.backup]
    )
    written: list[WrittenRow] = []
    mapped: list[tuple[str, str, str, bytes]] = []
    for d in decisions:
        if d.action == "create" and d.row_id not in inserted:
            d.row_id = await _existing_copy(conn, tid, entity, d)
            d.action = "existing"
        if d.action in ("create", "overwrite"):
            before = jobs_store.source_before(entity, d.item.source_id, d.found)
            action = "created" if d.action == "create" else "overwritten"
            written.append(
                WrittenRow(entity, d.row_id, action, d.backup, d.item.source_id, before)
            )
        if d.action != "unchanged":
            outcome.add({"create": "created", "overwrite": "updated"}.get(d.action, d.action))
        mapped.append((entity, d.item.source_id, d.row_id, d.item.source_hash))
        if entity == "environment":
            env_ids[d.item.source_id] = d.row_id
    await jobs_store.record_rows(conn, tid, job_id, written, mapped)
    return outcome


async def _existing_copy(conn: Conn, tid: uuid.UUID, entity: str, d: Decision) -> str:
    """The live row an insert met instead (only memories dedupe by content)."""
    if entity == "memory":
        f = d.item.fields
        scope = Scope(f["user_id"], f["agent_id"], f["run_id"], f["namespace"])
        found = await memories.find_duplicate(
            conn, tid, content_hash(f["content"]), scope, f.get("metadata") or {}
        )
        if found is not None:
            return found.id
    raise RuntimeError(f"a {entity} from the browser could not be written")


async def undo(conn: Conn, tid: uuid.UUID, job_id: uuid.UUID) -> dict[str, int]:
    """Delete what the job created, restore what it overwrote; counts per action."""
    rows = await jobs_store.written_rows(conn, job_id)
    created: dict[str, list[str]] = {e: [] for e in TABLES}
    restored: dict[str, list[dict[str, Any]]] = {e: [] for e in TABLES}
    for row in rows:
        if row.action == "created":
            created[row.entity].append(row.row_id)
        elif row.backup is not None:
            restored[row.entity].append(row.backup)
    await rowcopy.delete(conn, tasks.TABLE, tid, created["task"])
    await rowcopy.delete(conn, memories.TABLE, tid, created["memory"])
    if created["environment"]:
        await environments.detach_tasks(conn, tid, created["environment"])
    await rowcopy.delete(conn, environments.TABLE, tid, created["environment"])
    for entity in ("environment", "task", "memory"):
        table, columns = TABLES[entity]
        await rowcopy.restore(conn, table, tid, columns[1:], restored[entity])
    await jobs_store.forget_sources(conn, tid, job_id)
    return {
        "deleted": sum(len(v) for v in created.values()),
        "restored": sum(len(v) for v in restored.values()),
    }
