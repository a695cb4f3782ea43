"""Import of an NDJSON export into the caller's tenant, all or nothing.

``Importer`` receives decoded lines and writes them in batches inside the one
transaction its caller holds; the caller commits only after the ``end`` line
matched the counts, so a truncated or tampered stream leaves nothing behind.
Ids are kept where they are free. An id that another tenant holds is given a
fresh one (tenants never share rows; references from tasks and events follow
the new id), and an id the caller's tenant already holds is a conflict that
``on_conflict`` settles: ``skip`` keeps the existing row, ``overwrite``
replaces it, ``fail`` stops the import. Memories keep their embeddings unless
the export came from another model (or dimension): then they are embedded
again, batch by batch, and each batch is reported to ``progress``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import numpy as np
from psycopg.types.json import Jsonb

from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import Conflict
from memory_service.events import store as event_store
from memory_service.events.models import NewEvent, validate_event
from memory_service.executions import copies as executions
from memory_service.infra import rowcopy
from memory_service.infra.secret_box import SecretBox
from memory_service.memories import history as memory_history
from memory_service.memories import repository as memories
from memory_service.memories.models import HistoryEntry
from memory_service.memories.validation import MemoryValidator, content_hash
from memory_service.records import environments, tasks
from memory_service.transfer.line_checks import (
    check_environment,
    check_memory,
    check_task,
    checked,
    line_error,
)
from memory_service.transfer.lines import (
    EnvironmentLine,
    EventLine,
    ExecutionLine,
    Header,
    LineError,
    MemoryLine,
    TaskLine,
    decode_embedding,
)
from memory_service.validation import check_json_object

BATCH = 500
CONFLICT_POLICIES = ("skip", "overwrite", "fail")
MAX_WARNINGS = 100
Progress = Callable[[dict[str, Any]], Awaitable[None]]
Entity = MemoryLine | TaskLine | EnvironmentLine | ExecutionLine | EventLine


@dataclass(slots=True)
class ImportReport:
    dry_run: bool
    on_conflict: str
    source_model: str
    re_embedded: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, kind: str, action: str, n: int = 1) -> None:
        if n:
            bucket = self.counts.setdefault(kind, {})
            bucket[action] = bucket.get(action, 0) + n

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)


class Importer:
    def __init__(
        self,
        conn: Any,
        tenant_id: uuid.UUID,
        header: Header,
        *,
        embedder: CachedEmbedder,
        validator: MemoryValidator,
        on_conflict: str,
        dry_run: bool,
        progress: Progress,
        box: SecretBox | None = None,
    ) -> None:
        self.box = box
        self.conn = conn
        self.tid = tenant_id
        self.embedder = embedder
        self.validator = validator
        self.on_conflict = on_conflict
        self.progress = progress
        self.re_embed = (
            header.model.name != embedder.model_name or header.model.dimension != embedder.dimension
        )
        self.report = ImportReport(dry_run, on_conflict, header.model.name, self.re_embed)
        self.ids: dict[str, dict[str, str]] = {"environment": {}, "task": {}, "execution": {}}
        self.seen: dict[str, int] = {}
        self.batch: list[tuple[int, Entity]] = []
        self.foreign: dict[str, set[str]] = {}

    async def add(self, lineno: int, line: Entity) -> None:
        kind = _kind(line)
        self.seen[kind] = self.seen.get(kind, 0) + 1
        if self.batch and (_kind(self.batch[0][1]) != kind or len(self.batch) >= BATCH):
            await self.flush()
        self.batch.append((lineno, line))

    async def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        kind = _kind(batch[0][1])
        try:
            if kind == "memory":
                await self._memories(batch)  # type: ignore[arg-type]
            elif kind == "task":
                await self._tasks(batch)  # type: ignore[arg-type]
            elif kind == "environment":
                await self._environments(batch)  # type: ignore[arg-type]
            elif kind == "execution":
                await self._executions(batch)  # type: ignore[arg-type]
            else:
                await self._events(batch)  # type: ignore[arg-type]
        except LineError as exc:
            raise line_error(batch[0][0], str(exc)) from None

    async def finish(self, lineno: int, counts: dict[str, int]) -> ImportReport:
        await self.flush()
        expected = {k: v for k, v in counts.items() if v}
        if expected != self.seen:
            raise line_error(
                lineno, f"the end line counts {expected} but the stream held {self.seen}"
            )
        return self.report

    # -- ids and conflicts -----------------------------------------------------------------
    async def _place(
        self, kind: str, table: str, batch: Sequence[tuple[int, Any]]
    ) -> list[tuple[str, bool]]:
        """(id to write, whether it overwrites) per line, or raises / marks a skip as ''."""
        for lineno, line in batch:
            try:
                line.id = str(uuid.UUID(line.id))
            except ValueError:
                raise line_error(lineno, f"id {line.id!r} is not a UUID") from None
        held = await rowcopy.owners(self.conn, table, [line.id for _, line in batch])
        self.foreign[table] = {i for i, owner in held.items() if owner != self.tid}
        wanted = [self._local_id(table, line.id) for _, line in batch]
        owners = await rowcopy.owners(self.conn, table, wanted)
        placed: list[tuple[str, bool]] = []
        for (lineno, line), want in zip(batch, wanted, strict=True):
            owner = owners.get(want)
            if owner is None:
                placed.append((want, False))
            elif owner != self.tid:
                placed.append((str(uuid.uuid4()), False))
            elif self.on_conflict == "fail":
                raise Conflict(
                    f"line {lineno}: {kind} {line.id} already exists (on_conflict=fail); "
                    "nothing was imported"
                )
            elif self.on_conflict == "skip":
                placed.append(("", False))
                self.report.add(kind, "skipped")
            else:
                placed.append((want, True))
        return placed

    def _local_id(self, table: str, source_id: str) -> str:
        """The id a row gets here: its own, unless another tenant holds that one.

        Then a name-based UUID of (this tenant, the id) stands in, the same on
        every import, so importing a file twice meets the first copy as a conflict.
        """
        if source_id in self.foreign.get(table, set()):
            return str(uuid.uuid5(self.tid, source_id))
        return source_id

    async def _write(
        self, kind: str, table: str, columns: Sequence[str], rows: list[tuple[tuple[Any, ...], bool]]
    ) -> set[str]:
        """Insert new rows and overwrite existing ones; the ids now holding a line's data."""
        fresh = [r for r, over in rows if not over]
        replace = [r for r, over in rows if over]
        inserted = await rowcopy.insert_rows(self.conn, table, self.tid, columns, fresh)
        await rowcopy.update_rows(self.conn, table, self.tid, columns, replace)
        self.report.add(kind, "created", len(inserted))
        self.report.add(kind, "overwritten", len(replace))
        clashed = len(fresh) - len(inserted)
        if clashed and self.on_conflict == "fail":
            raise Conflict(
                f"{clashed} {kind}(s) already exist here with the same content or name "
                "(on_conflict=fail); nothing was imported"
            )
        self.report.add(kind, "skipped", clashed)
        return inserted | {str(r[0]) for r in replace}

    # -- entities --------------------------------------------------------------------------
    async def _environments(self, batch: list[tuple[int, EnvironmentLine]]) -> None:
        by_name = await environments.ids_by_name(self.conn, self.tid, [e.name for _, e in batch])
        original = [env.id for _, env in batch]
        for _, env in batch:  # an environment of the same name is the same environment
            env.id = by_name.get(env.name, env.id)
        placed = await self._place("environment", environments.TABLE, batch)
        current = await rowcopy.snapshot(
            self.conn, environments.TABLE, self.tid, [i for i, over in placed if over]
        )
        rows: list[tuple[tuple[Any, ...], bool]] = []
        for (lineno, env), (new_id, over), old in zip(batch, placed, original, strict=True):
            self.ids["environment"][old] = new_id or env.id
            if not new_id:
                continue
            checked(lineno, partial(check_environment, env))
            secrets = dict.fromkeys(env.secret_names) | (env.secrets or {})
            if over:
                secrets = (current.get(new_id, {}).get("secrets") or {}) | (env.secrets or {})
            if self.box is not None:  # sealed at rest like every other write of a secret
                secrets = {
                    k: self.box.reseal(v) if isinstance(v, str) else v for k, v in secrets.items()
                }
            rows.append(((
                new_id, env.name, env.description, Jsonb(env.config), Jsonb(secrets),
                env.is_active, env.created_at, env.updated_at, env.version,
            ), over))
        await self._write("environment", environments.TABLE, environments.COPY_COLUMNS, rows)

    async def _tasks(self, batch: list[tuple[int, TaskLine]]) -> None:
        placed = await self._place("task", tasks.TABLE, batch)
        envs = {t.environment_id for _, t in batch if t.environment_id} - set(self.ids["environment"])
        own_envs = await rowcopy.owners(self.conn, environments.TABLE, sorted(envs))
        rows: list[tuple[tuple[Any, ...], bool]] = []
        for (lineno, task), (new_id, over) in zip(batch, placed, strict=True):
            self.ids["task"][task.id] = new_id or task.id
            if not new_id:
                continue
            checked(lineno, partial(check_task, task))
            env = task.environment_id
            if env is not None:
                env = self.ids["environment"].get(env) or (
                    env if own_envs.get(env) == self.tid else None
                )
                if env is None:
                    self.report.warn(f"line {lineno}: environment {task.environment_id} is "
                                     "not in this tenant; the task keeps no environment")
            rows.append(((
                new_id, task.title, task.description, task.status, task.priority, env,
                task.agent_id, task.tags, Jsonb(task.metadata), task.created_at,
                task.updated_at, task.completed_at, task.version,
            ), over))
        await self._write("task", tasks.TABLE, tasks.COPY_COLUMNS, rows)

    def _reference(self, kind: str, value: str | None, own: dict[str, uuid.UUID]) -> str | None:
        """A reference to a row of ``kind``: its id here, or None if it is not here."""
        if value is None:
            return None
        return self.ids[kind].get(value) or (value if own.get(value) == self.tid else None)

    async def _executions(self, batch: list[tuple[int, ExecutionLine]]) -> None:
        placed = await self._place("execution", executions.TABLE, batch)
        refs = {"task": tasks.TABLE, "environment": environments.TABLE}
        own: dict[str, dict[str, uuid.UUID]] = {}
        for kind, table in refs.items():
            wanted = {getattr(e, f"{kind}_id") for _, e in batch} - {None} - set(self.ids[kind])
            own[kind] = await rowcopy.owners(self.conn, table, sorted(w for w in wanted if w))
        rows: list[tuple[tuple[Any, ...], bool]] = []
        for (lineno, e), (new_id, over) in zip(batch, placed, strict=True):
            self.ids["execution"][e.id] = new_id or e.id
            if not new_id:
                continue
            checked(lineno, partial(check_json_object, e.metadata, "metadata"))
            parent = self.ids["execution"].get(e.parent_id) if e.parent_id else None
            if e.parent_id and parent is None:
                raise line_error(lineno, f"parent execution {e.parent_id} is not in the stream")
            rows.append(((
                new_id, self._reference("task", e.task_id, own["task"]),
                self._reference("environment", e.environment_id, own["environment"]),
                e.agent_id, Jsonb(e.metadata), e.status, parent, e.fork_seq, e.head_seq,
                e.keyframe_seq, e.created_at, e.updated_at, e.ended_at, e.version,
            ), over))
        written = await self._write("execution", executions.TABLE, executions.COPY_COLUMNS, rows)
        for (_, e), (new_id, _) in zip(batch, placed, strict=True):
            if new_id in written:
                steps = [{**msgspec.structs.asdict(s), "state": _text(s.state),
                          "state_patch": _text(s.state_patch)} for s in e.steps]
                checkpoints = [msgspec.structs.asdict(c) for c in e.checkpoints]
                await executions.replace_history(self.conn, self.tid, new_id, steps, checkpoints)

    async def _memories(self, batch: list[tuple[int, MemoryLine]]) -> None:
        placed = await self._place("memory", memories.TABLE, batch)
        todo = [(n, m, p) for (n, m), p in zip(batch, placed, strict=True) if p[0]]
        vectors = await self._vectors(todo)
        rows: list[tuple[tuple[Any, ...], bool]] = []
        for (lineno, m, (new_id, over)), vector in zip(todo, vectors, strict=True):
            checked(lineno, partial(check_memory, self.validator, m))
            rows.append(((
                new_id, m.content, content_hash(m.content), m.user_id, m.agent_id, m.run_id,
                m.namespace, Jsonb(m.metadata), m.importance, vector, m.context, m.created_at,
                m.updated_at, m.expires_at, m.version,
            ), over))
        written = await self._write("memory", memories.TABLE, memories.COPY_COLUMNS, rows)
        for _, m, (new_id, _over) in todo:
            if m.history is not None and new_id in written:
                entries = [HistoryEntry(h.event, h.old_content, h.new_content, h.old_metadata,
                                        h.new_metadata, h.at, h.version) for h in m.history]
                await memory_history.replace_history(self.conn, self.tid, new_id, entries)
        if self.re_embed:
            self.report.add("memory", "re_embedded", len(todo))
        await self.progress({"entity": "memory", "done": self.report_done("memory"),
                             "re_embedded": self.re_embed})

    def report_done(self, kind: str) -> int:
        return sum(self.report.counts.get(kind, {}).get(a, 0)
                   for a in ("created", "overwritten", "skipped"))

    async def _vectors(self, todo: list[tuple[int, MemoryLine, tuple[str, bool]]]) -> list[Any]:
        dim = self.embedder.dimension
        if not self.re_embed:
            out: list[Any] = []
            for lineno, m, _ in todo:
                if m.embedding is None:
                    raise line_error(lineno, "memory has no embedding")
                try:
                    out.append(decode_embedding(m.embedding, dim))
                except LineError as exc:
                    raise line_error(lineno, str(exc)) from None
            return out
        if not todo:
            return []
        texts = [m.content + ("\n" + m.context if m.context else "") for _, m, _ in todo]
        matrix: np.ndarray = await self.embedder.embed_async(texts)
        return list(matrix)

    async def _events(self, batch: list[tuple[int, EventLine]]) -> None:
        """Events are immutable: one whose id the tenant holds is already here and is
        skipped, whatever ``on_conflict`` says, except that ``fail`` stops the import."""
        events: list[NewEvent] = []
        for lineno, e in batch:
            task_id = self.ids["task"].get(e.task_id, e.task_id) if e.task_id else None
            execution_id = (
                self.ids["execution"].get(e.execution_id, e.execution_id) if e.execution_id else None
            )
            event = NewEvent(
                type=e.type_name, severity=e.severity, source=e.source, ts=e.ts,
                trace_id=e.trace_id, span_id=e.span_id, task_id=task_id,
                execution_id=execution_id, agent_id=e.agent_id, duration_ms=e.duration_ms,
                attributes=e.attributes, id=e.id,
            )
            events.append(checked(lineno, partial(validate_event, event, "", None)))
        if self.on_conflict == "fail":
            held = await event_store.held_ids(self.conn, self.tid, [e.id for _, e in batch if e.id])
            for lineno, e in batch:
                if e.id in held:
                    raise Conflict(
                        f"line {lineno}: event {e.id} already exists (on_conflict=fail); "
                        "nothing was imported"
                    )
        created = await event_store.insert_batch(self.conn, self.tid, events)
        self.report.add("event", "created", len(created))
        self.report.add("event", "skipped", len(events) - len(created))


def _text(raw: msgspec.Raw) -> str | None:
    text = bytes(raw).decode()
    return None if text.strip() == "null" else text


def _kind(line: Entity) -> str:
    return str(type(line).__struct_config__.tag)
