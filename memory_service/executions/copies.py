"""Verbatim copies of executions, for export and import of a tenant.

The execution rows go through ``memory_service.infra.rowcopy`` with the columns named
here; their steps and checkpoints are read and written here, as stored: states
and patches stay JSON text end to end (never decoded), so an imported
execution rebuilds exactly the states the exported one did. The service's rules
(appending steps, forking) do not apply to a copy; ``replace_history`` only
swaps the steps and checkpoints of one execution of the caller's tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]

TABLE = "executions"
COPY_COLUMNS = (
    "id", "task_id", "environment_id", "agent_id", "metadata", "status", "parent_id",
    "fork_seq", "head_seq", "keyframe_seq", "created_at", "updated_at", "ended_at", "version",
)
STEP_FIELDS = (
    "seq", "kind", "name", "input", "output", "error", "metadata", "parent_seq", "started_at",
    "ended_at", "recorded_at", "state", "state_patch", "state_size", "changed_paths",
)
CHECKPOINT_FIELDS = ("label", "seq", "note", "created_at")


async def histories(
    conn: Conn, tenant_id: uuid.UUID, execution_ids: Sequence[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(steps, checkpoints) of each execution, its own rows only, states as JSON text."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT execution_id::text AS execution_id, seq, kind, name, input, output, error, "
        "metadata, parent_seq, started_at, ended_at, recorded_at, state::text AS state, "
        "state_patch::text AS state_patch, state_size, changed_paths FROM execution_steps "
        "WHERE tenant_id = %s AND execution_id = ANY(%s::uuid[]) ORDER BY execution_id, seq",
        (tenant_id, list(execution_ids)),
    )
    steps: dict[str, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        steps.setdefault(row.pop("execution_id"), []).append(row)
    await cur.execute(
        "SELECT execution_id::text AS execution_id, label, seq, note, created_at "
        "FROM execution_checkpoints WHERE tenant_id = %s AND execution_id = ANY(%s::uuid[]) "
        "ORDER BY execution_id, seq, label",
        (tenant_id, list(execution_ids)),
    )
    checkpoints: dict[str, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        checkpoints.setdefault(row.pop("execution_id"), []).append(row)
    return steps, checkpoints


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


async def replace_history(
    conn: Conn,
    tenant_id: uuid.UUID,
    execution_id: str,
    steps: Sequence[dict[str, Any]],
    checkpoints: Sequence[dict[str, Any]],
) -> None:
    """Make the execution's own steps and checkpoints exactly these."""
    for table in ("execution_checkpoints", "execution_steps"):
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND execution_id = %s").format(
                sql.Identifier(table)
            ),
            (tenant_id, execution_id),
        )
    async with conn.cursor() as cur:
        if steps:
            await cur.executemany(
                "INSERT INTO execution_steps (execution_id, tenant_id, seq, kind, name, input, "
                "output, error, metadata, parent_seq, started_at, ended_at, recorded_at, state, "
                "state_patch, state_size, changed_paths) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s::json, %s::json, %s, %s)",
                [
                    (execution_id, tenant_id, s["seq"], s["kind"], s["name"], _jsonb(s["input"]),
                     _jsonb(s["output"]), _jsonb(s["error"]), Jsonb(s["metadata"]),
                     s["parent_seq"], s["started_at"], s["ended_at"], s["recorded_at"],
                     s["state"], s["state_patch"], s["state_size"], s["changed_paths"])
                    for s in steps
                ],
            )
        if checkpoints:
            await cur.executemany(
                "INSERT INTO execution_checkpoints (execution_id, label, tenant_id, seq, note, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                [(execution_id, c["label"], tenant_id, c["seq"], c["note"], c["created_at"])
                 for c in checkpoints],
            )
