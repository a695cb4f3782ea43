"""Tasks: the work items agents pick up, with a status life cycle and keyset listing.

``TaskService`` validates input, enforces the status machine (a finished task only
goes back to ``pending`` through ``reopen``), checks ``If-Match`` versions and owns
the task SQL (like ``tenants.py``, the queries are few and live next to their
rules). Every listing sort pages by ``(sort key, seq)``, a total order, so the
cursors return every row exactly once while rows are inserted. (An update that
changes a row's sort key mid-walk, such as any update under ``updated_at``, moves
that row, as with any keyset walk over a mutable key; inserts never disturb it.) Status changes are
reported to ``status_listeners`` after commit (the event log subscribes).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from memory_service.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.records.task_models import (
    FINISHED,
    MAX_LIST_LIMIT,
    MAX_SHORT,
    MAX_TEXT,
    MAX_TITLE,
    PRIORITIES,
    SORTS,
    STATUSES,
    TRANSITIONS,
    Task,
    TaskQuery,
    task_from_row,
)
from memory_service.records.tenants import parse_uuid
from memory_service.validation import check_choice, check_json_object, check_tags, check_text

# the columns an export carries and an import or a migration writes as given
TABLE = "tasks"
COPY_COLUMNS = (
    "id", "title", "description", "status", "priority", "environment_id", "agent_id", "tags",
    "metadata", "created_at", "updated_at", "completed_at", "version",
)
COLUMNS = sql.SQL(
    "id, title, description, status, priority, environment_id, agent_id, tags, metadata, "
    "created_at, updated_at, completed_at, version, seq"
)


# (tenant_id, task after the change, status before it or None for a new task)
StatusListener = Callable[[uuid.UUID, Task, str | None], Awaitable[None]]


class TaskService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cursors: CursorCodec,
        *,
        status_listeners: Sequence[StatusListener] = (),
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self.status_listeners = tuple(status_listeners)

    # -- writes ------------------------------------------------------------------------
    async def create(self, tenant_id: uuid.UUID, fields: dict[str, Any]) -> Task:
        row = self._validate(fields, creating=True)
        tid = tenant_id
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            await self._check_environment(conn, tid, row.get("environment_id"))
            names = list(row)
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL(
                    "INSERT INTO tasks (tenant_id, {cols}, completed_at) "
                    "VALUES (%s, {vals}, CASE WHEN %s THEN clock_timestamp() END) "
                    "RETURNING {out}"
                ).format(
                    cols=sql.SQL(", ").join(map(sql.Identifier, names)),
                    vals=sql.SQL(", ").join(sql.Placeholder() * len(names)),
                    out=COLUMNS,
                ),
                [tid, *row.values(), row.get("status", "pending") in FINISHED],
            )
            task = task_from_row(await cur.fetchone())
        await self._notify(tenant_id, task, None)
        return task

    async def update(
        self, tenant_id: uuid.UUID, task_id: str, fields: dict[str, Any], if_match: int | None
    ) -> Task:
        changes = self._validate(fields, creating=False)
        if not changes:
            raise InvalidInput(
                "nothing to update", errors=[FieldError("body", "no updatable field given")]
            )
        return await self._change(tenant_id, task_id, changes, if_match, reopen=False)

    async def reopen(self, tenant_id: uuid.UUID, task_id: str, if_match: int | None) -> Task:
        return await self._change(tenant_id, task_id, {"status": "pending"}, if_match, reopen=True)

    async def _change(
        self,
        tenant_id: uuid.UUID,
        task_id: str,
        changes: dict[str, Any],
        if_match: int | None,
        *,
        reopen: bool,
    ) -> Task:
        tid, kid = tenant_id, parse_uuid(task_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            current = await self._get(conn, tid, kid, for_update=True)
            if current is None:
                raise NotFound(f"task {task_id} not found")
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    f"task {task_id} is at version {current.version}, not {if_match}",
                    current=current,
                )
            new_status = changes.get("status", current.status)
            if reopen and current.status not in FINISHED:
                raise Conflict(f"task {task_id} is {current.status}; only finished tasks reopen")
            moving = not reopen and new_status != current.status
            if moving and new_status not in TRANSITIONS[current.status]:
                hint = " (use POST /v1/tasks/{id}/reopen)" if current.status in FINISHED else ""
                raise Conflict(
                    f"task {task_id} cannot go from {current.status} to {new_status}{hint}"
                )
            if "environment_id" in changes:
                await self._check_environment(conn, tid, changes["environment_id"])
            sets = [
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in changes
            ]
            completed: sql.Composable = sql.SQL("completed_at")
            if new_status != current.status:
                completed = sql.SQL("CASE WHEN {} THEN clock_timestamp() END").format(
                    sql.Literal(new_status in FINISHED)
                )
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL(
                    "UPDATE tasks SET {sets}, completed_at = {completed}, "
                    "updated_at = clock_timestamp(), version = version + 1 "
                    "WHERE tenant_id = %s AND id = %s RETURNING {out}"
                ).format(sets=sql.SQL(", ").join(sets), completed=completed, out=COLUMNS),
                [*changes.values(), tid, kid],
            )
            task = task_from_row(await cur.fetchone())
        if task.status != current.status:
            await self._notify(tenant_id, task, current.status)
        return task

    async def delete(self, tenant_id: uuid.UUID, task_id: str, if_match: int | None = None) -> None:
        tid, kid = tenant_id, parse_uuid(task_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            if if_match is not None:
                current = await self._get(conn, tid, kid, for_update=True)
                if current is not None and current.version != if_match:
                    raise PreconditionFailed(
                        f"task {task_id} is at version {current.version}, not {if_match}",
                        current=current,
                    )
            cur = await conn.execute(
                "DELETE FROM tasks WHERE tenant_id = %s AND id = %s", (tid, kid)
            )
            if cur.rowcount == 0:
                raise NotFound(f"task {task_id} not found")

    # -- reads -------------------------------------------------------------------------
    async def get(self, tenant_id: uuid.UUID, task_id: str) -> Task:
        tid, kid = tenant_id, parse_uuid(task_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn:
            task = await self._get(conn, tid, kid)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def list(
        self, tenant_id: uuid.UUID, query: TaskQuery, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Task]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                errors=[FieldError("limit", "range")],
            )
        descending = query.sort.startswith("-")
        sort = query.sort.removeprefix("-")
        if sort not in SORTS:
            raise InvalidInput(
                f"sort must be one of {', '.join(SORTS)} (prefix - for descending)",
                errors=[FieldError("sort", "unknown sort key")],
            )
        kind = f"tasks:{query.sort}"
        tid = tenant_id
        where: list[sql.Composable] = [sql.SQL("tenant_id = %s")]
        params: list[Any] = [tid]
        for name, values, choices in (
            ("status", query.status, STATUSES),
            ("priority", query.priority, PRIORITIES),
        ):
            if values:
                for v in values:
                    check_choice(v, name, choices)
                where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(name)))
                params.append(list(values))
        if query.environment_id is not None:
            where.append(sql.SQL("environment_id = %s"))
            params.append(parse_uuid(query.environment_id, "environment_id"))
        if query.agent_id is not None:
            where.append(sql.SQL("agent_id = %s"))
            params.append(check_text(query.agent_id, "agent_id", MAX_SHORT, required=True))
        if query.tags:
            where.append(sql.SQL("tags @> %s"))
            params.append(check_tags(query.tags, "tag"))
        if query.text:
            check_text(query.text, "q", MAX_SHORT, required=True)
            pattern = "%" + _escape_like(query.text) + "%"
            where.append(sql.SQL("(title ILIKE %s OR description ILIKE %s)"))
            params += [pattern, pattern]
        for op, value in ((">=", query.created_after), ("<", query.created_before)):
            if value is not None:
                if value.tzinfo is None:
                    raise InvalidInput(
                        "created range needs a time zone",
                        errors=[FieldError("created_after/created_before", "RFC 3339 with zone")],
                    )
                where.append(sql.SQL("created_at " + op + " %s"))
                params.append(value)
        key = sql.Identifier(SORTS[sort])
        if cursor:
            after_key, after_seq = self._decode_cursor(cursor, kind, tenant_id, sort)
            where.append(
                sql.SQL("({}, seq) {} (%s, %s)").format(key, sql.SQL("<" if descending else ">"))
            )
            params += [after_key, after_seq]
        direction = sql.SQL("DESC" if descending else "ASC")
        statement = sql.SQL(
            "SELECT {out} FROM tasks WHERE {where} ORDER BY {key} {dir}, seq {dir} LIMIT %s"
        ).format(out=COLUMNS, where=sql.SQL(" AND ").join(where), key=key, dir=direction)
        params.append(limit + 1)
        async with wrap_db_errors(), self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(statement, params)
            rows = [task_from_row(r) for r in await cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            last_key: Any = {
                "created_at": last.created_at,
                "updated_at": last.updated_at,
                "priority": PRIORITIES.index(last.priority),
                "title": last.title,
            }[sort]
            if isinstance(last_key, datetime):
                last_key = last_key.isoformat()
            next_cursor = self.cursors.encode(kind, tenant_id, json.dumps([last_key, last.seq]))
        return Page(rows, next_cursor)

    # -- helpers -----------------------------------------------------------------------
    def _validate(self, fields: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if creating or "title" in fields:
            out["title"] = check_text(fields.get("title"), "title", MAX_TITLE, required=True)
        if "description" in fields:
            out["description"] = check_text(fields["description"], "description", MAX_TEXT)
        if "status" in fields:
            out["status"] = check_choice(fields["status"], "status", STATUSES)
        if "priority" in fields:
            out["priority"] = check_choice(fields["priority"], "priority", PRIORITIES)
        if "environment_id" in fields:
            env = fields["environment_id"]
            out["environment_id"] = None if env is None else parse_uuid(env, "environment_id")
        if "agent_id" in fields:
            out["agent_id"] = check_text(fields["agent_id"], "agent_id", MAX_SHORT)
            if out["agent_id"] == "":
                raise InvalidInput(
                    "agent_id must not be empty", errors=[FieldError("agent_id", "empty")]
                )
        if "tags" in fields:
            out["tags"] = check_tags(fields["tags"])
        if "metadata" in fields:
            out["metadata"] = Jsonb(check_json_object(fields["metadata"], "metadata"))
        return out

    async def _check_environment(self, conn: Any, tid: uuid.UUID, env_id: Any) -> None:
        if env_id is None:
            return
        cur = await conn.execute(
            "SELECT 1 FROM environments WHERE tenant_id = %s AND id = %s FOR SHARE", (tid, env_id)
        )
        if await cur.fetchone() is None:
            raise InvalidInput(
                f"environment {env_id} does not exist",
                errors=[FieldError("environment_id", "no such environment")],
            )

    async def _get(
        self, conn: Any, tid: uuid.UUID, kid: uuid.UUID, *, for_update: bool = False
    ) -> Task | None:
        cur = await conn.cursor(row_factory=dict_row).execute(
            sql.SQL("SELECT {out} FROM tasks WHERE tenant_id = %s AND id = %s {lock}").format(
                out=COLUMNS, lock=sql.SQL("FOR UPDATE" if for_update else "")
            ),
            (tid, kid),
        )
        row = await cur.fetchone()
        return None if row is None else task_from_row(row)

    def _decode_cursor(
        self, cursor: str, kind: str, tenant_id: uuid.UUID, sort: str
    ) -> tuple[Any, int]:
        position = self.cursors.decode(cursor, kind, tenant_id)
        bad = InvalidInput(
            "cursor is not valid for this listing",
            errors=[FieldError("cursor", "malformed or from another listing")],
        )
        try:
            value, seq = json.loads(str(position))
            if not isinstance(seq, int) or (sort == "priority" and not isinstance(value, int)):
                raise TypeError
            if sort in ("created_at", "updated_at"):
                value = datetime.fromisoformat(value)
        except (ValueError, TypeError):
            raise bad from None
        return value, seq

    async def _notify(self, tenant_id: uuid.UUID, task: Task, old_status: str | None) -> None:
        for listener in self.status_listeners:
            await listener(tenant_id, task, old_status)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
