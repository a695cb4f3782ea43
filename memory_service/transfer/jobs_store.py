"""SQL of migration jobs: the job rows, the rows each job wrote, and the source-id map.

The only module that knows ``migration_jobs``, ``migration_job_rows`` and
``migration_sources``. Every function takes an open connection (the caller owns
the transaction) and confines each statement to one tenant, so another tenant's
job is exactly as invisible as a job that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]

JOB_COLUMNS = sql.SQL(
    "id::text AS id, kind, status, total, done, outcome, errors, created_at, updated_at, "
    "finished_at"
)


@dataclass(slots=True)
class MigrationJob:
    id: str
    kind: str
    status: str
    total: dict[str, int]
    done: dict[str, int]
    outcome: dict[str, dict[str, int]]
    errors: list[dict[str, str]]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(slots=True)
class Source:
    row_id: str
    source_hash: bytes
    job_id: str


@dataclass(slots=True)
class WrittenRow:
    entity: str
    row_id: str
    action: str  # "created" | "overwritten"
    backup: dict[str, Any] | None
    source_id: str | None
    source_before: dict[str, Any] | None


async def create_job(
    conn: Conn, tenant_id: uuid.UUID, kind: str, total: dict[str, int]
) -> MigrationJob:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "INSERT INTO migration_jobs (tenant_id, kind, total) VALUES (%s, %s, %s) RETURNING {}"
        ).format(JOB_COLUMNS),
        (tenant_id, kind, Jsonb(total)),
    )
    return MigrationJob(**(await cur.fetchone() or {}))


async def get_job(
    conn: Conn, tenant_id: uuid.UUID, job_id: uuid.UUID, *, for_update: bool = False
) -> MigrationJob | None:
    lock = sql.SQL(" FOR UPDATE" if for_update else "")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM migration_jobs WHERE tenant_id = %s AND id = %s{}").format(
            JOB_COLUMNS, lock
        ),
        (tenant_id, job_id),
    )
    row = await cur.fetchone()
    return MigrationJob(**row) if row else None


async def unfinished_jobs(conn: Conn) -> list[tuple[uuid.UUID, str]]:
    """(tenant id, job id) of jobs a stopped process left pending or running."""
    cur = await conn.execute(
        "SELECT tenant_id, id::text FROM migration_jobs "
        "WHERE status IN ('pending', 'running') ORDER BY created_at"
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def update_job(
    conn: Conn,
    job_id: uuid.UUID,
    *,
    status: str | None = None,
    done: dict[str, int] | None = None,
    outcome: dict[str, dict[str, int]] | None = None,
    errors: list[dict[str, str]] | None = None,
    finished: bool = False,
) -> None:
    await conn.execute(
        "UPDATE migration_jobs SET status = coalesce(%s, status), done = coalesce(%s, done), "
        "outcome = coalesce(%s, outcome), errors = coalesce(%s, errors), "
        "updated_at = clock_timestamp(), "
        "finished_at = CASE WHEN %s THEN clock_timestamp() ELSE finished_at END "
        "WHERE id = %s",
        (
            status,
            None if done is None else Jsonb(done),
            None if outcome is None else Jsonb(outcome),
            None if errors is None else Jsonb(errors),
            finished,
            job_id,
        ),
    )


async def sources(
    conn: Conn, tenant_id: uuid.UUID, entity: str, source_ids: Sequence[str]
) -> dict[str, Source]:
    """The rows earlier migrations made of these browser ids (in this tenant)."""
    cur = await conn.execute(
        "SELECT source_id, row_id::text, source_hash, job_id::text FROM migration_sources "
        "WHERE tenant_id = %s AND entity = %s AND source_id = ANY(%s)",
        (tenant_id, entity, list(source_ids)),
    )
    return {r[0]: Source(r[1], bytes(r[2]), r[3]) for r in await cur.fetchall()}


async def record_rows(
    conn: Conn,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    rows: Sequence[WrittenRow],
    mapped: Sequence[tuple[str, str, str, bytes]],
) -> None:
    """Remember what the job wrote, and map (entity, source id) to (row id, hash)."""
    async with conn.cursor() as cur:
        if rows:
            await cur.executemany(
                "INSERT INTO migration_job_rows (job_id, tenant_id, entity, row_id, action, "
                "backup, source_before) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (job_id, entity, row_id) DO NOTHING",
                [
                    (job_id, tenant_id, r.entity, r.row_id, r.action,
                     None if r.backup is None else Jsonb(r.backup),
                     None if r.source_before is None else Jsonb(r.source_before))
                    for r in rows
                ],
            )
        if mapped:
            await cur.executemany(
                "INSERT INTO migration_sources (tenant_id, entity, source_id, row_id, "
                "source_hash, job_id) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, entity, source_id) DO UPDATE SET row_id = EXCLUDED.row_id, "
                "source_hash = EXCLUDED.source_hash, job_id = EXCLUDED.job_id",
                [(tenant_id, e, s, r, h, job_id) for e, s, r, h in mapped],
            )


async def written_rows(conn: Conn, job_id: uuid.UUID) -> list[WrittenRow]:
    cur = await conn.execute(
        "SELECT entity, row_id::text, action, backup, NULL, source_before "
        "FROM migration_job_rows WHERE job_id = %s",
        (job_id,),
    )
    return [WrittenRow(*r) for r in await cur.fetchall()]


async def forget_sources(conn: Conn, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Undo the job's source mappings: drop them, then put back those it replaced."""
    await conn.execute(
        "DELETE FROM migration_sources WHERE tenant_id = %s AND job_id = %s", (tenant_id, job_id)
    )
    cur = await conn.execute(
        "SELECT source_before FROM migration_job_rows WHERE job_id = %s "
        "AND source_before IS NOT NULL",
        (job_id,),
    )
    before = [r[0] for r in await cur.fetchall()]
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO migration_sources (tenant_id, entity, source_id, row_id, source_hash, "
            "job_id) SELECT %s, b.entity, b.source_id, b.row_id, decode(b.source_hash, 'hex'), "
            "b.job_id FROM jsonb_to_record(%s) AS b(entity text, source_id text, row_id uuid, "
            "source_hash text, job_id uuid) "
            "WHERE EXISTS (SELECT 1 FROM migration_jobs j WHERE j.id = b.job_id) "
            "ON CONFLICT DO NOTHING",
            [(tenant_id, Jsonb(b)) for b in before],
        )


def source_before(entity: str, source_id: str, found: Source | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "entity": entity,
        "source_id": source_id,
        "row_id": found.row_id,
        "source_hash": found.source_hash.hex(),
        "job_id": found.job_id,
    }


async def erase_memory_rows(
    conn: Conn, tenant_id: uuid.UUID, memories: Mapping[str, int]
) -> None:
    """Purge: forget what migration jobs kept of these memories (id -> seq): a backup
    of one that a job overwrote holds its earlier content and embedding, and undoing
    the job would bring it back. Their source mappings go too (a digest of the item
    they were made from); a later migration of the same item makes a new memory."""
    ids = list(memories)
    await conn.execute(
        "DELETE FROM migration_job_rows WHERE tenant_id = %s AND entity = 'memory' "
        "AND row_id = ANY(%s::uuid[])",
        (tenant_id, ids),
    )
    await conn.execute(
        "DELETE FROM migration_sources WHERE tenant_id = %s AND entity = 'memory' "
        "AND row_id = ANY(%s::uuid[])",
        (tenant_id, ids),
    )
