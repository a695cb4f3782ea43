"""SQL of the search accelerator: the change log, vector loading and re-checks.

Everything the in-process indexes read from PostgreSQL goes through here. Rows
are addressed by ``memories.seq`` (a stable bigint per memory), which is also the
FAISS id. Re-checks reuse the repository's tenant/scope/filter/expiry clause, so
a row that FAISS ranks is shown only if the database still says it matches.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import Memory, Scope

Conn = AsyncConnection[Any]
CHANNEL = "memory_changes"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    tenant_id: uuid.UUID
    memory_seq: int
    op: str


async def last_change(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM memory_changes")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def pruned_through(conn: Conn) -> int:
    cur = await conn.execute(
        "SELECT value FROM service_state WHERE name = 'memory_changes_pruned_through'"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def changes_after(conn: Conn, after: int, limit: int) -> list[Change]:
    cur = await conn.execute(
        "SELECT seq, tenant_id, memory_seq, op FROM memory_changes WHERE seq > %s "
        "ORDER BY seq LIMIT %s",
        (after, limit),
    )
    return [Change(int(r[0]), r[1], int(r[2]), r[3]) for r in await cur.fetchall()]


async def prune_changes(conn: Conn, older_than_s: float) -> int:
    """Drop log rows older than the retention; records how far the log was cut."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH gone AS (DELETE FROM memory_changes "
            "WHERE at < now() - make_interval(secs => %s) RETURNING seq) "
            "SELECT coalesce(max(seq), 0), count(*) FROM gone",
            (older_than_s,),
        )
        row = await cur.fetchone()
        through, count = (int(row[0]), int(row[1])) if row else (0, 0)
        if through:
            await conn.execute(
                "UPDATE service_state SET value = greatest(value::bigint, %s)::text "
                "WHERE name = 'memory_changes_pruned_through'",
                (through,),
            )
    return count


async def tenant_sizes(conn: Conn) -> dict[uuid.UUID, int]:
    cur = await conn.execute("SELECT tenant_id, count(*) FROM memories GROUP BY tenant_id")
    return {r[0]: int(r[1]) for r in await cur.fetchall()}


async def tenant_size(conn: Conn, tenant_id: uuid.UUID) -> int:
    cur = await conn.execute("SELECT count(*) FROM memories WHERE tenant_id = %s", (tenant_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(slots=True)
class VectorRows:
    seqs: np.ndarray  # int64
    versions: np.ndarray  # int64
    vectors: np.ndarray  # float32 (n, dim)

    def __len__(self) -> int:
        return len(self.seqs)


async def tenant_changes_after(conn: Conn, tenant_id: uuid.UUID, after: int) -> set[int]:
    """Memory seqs of one tenant that changed after log position ``after``."""
    cur = await conn.execute(
        "SELECT DISTINCT memory_seq FROM memory_changes WHERE tenant_id = %s AND seq > %s",
        (tenant_id, after),
    )
    return {int(r[0]) for r in await cur.fetchall()}


async def current_versions(
    conn: Conn, tenant_id: uuid.UUID, memory_seqs: Sequence[int]
) -> dict[int, int]:
    """seq -> version of the rows among ``memory_seqs`` that still exist."""
    cur = await conn.execute(
        "SELECT seq, version FROM memories WHERE tenant_id = %s AND seq = ANY(%s)",
        (tenant_id, list(memory_seqs)),
    )
    return {int(r[0]): int(r[1]) for r in await cur.fetchall()}


async def current_vectors(
    conn: Conn, tenant_id: uuid.UUID, memory_seqs: Sequence[int], dimension: int
) -> VectorRows:
    """The rows among ``memory_seqs`` that still exist, with their current embedding."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            "SELECT seq, version, embedding FROM memories WHERE tenant_id = %s AND seq = ANY(%s)",
            (tenant_id, list(memory_seqs)),
        )
        rows = await cur.fetchall()
    return _stack(rows, dimension)


async def stream_tenant_vectors(
    conn: Conn, tenant_id: uuid.UUID, dimension: int, batch: int = 10_000
) -> AsyncGenerator[VectorRows, None]:
    """Every row of a tenant in batches; the caller holds a transaction."""
    async with conn.cursor(name=f"vectors_{uuid.uuid4().hex[:8]}", binary=True) as cur:
        await cur.execute(
            "SELECT seq, version, embedding FROM memories WHERE tenant_id = %s", (tenant_id,)
        )
        while rows := await cur.fetchmany(batch):
            yield _stack(rows, dimension)


def _stack(rows: Sequence[Any], dimension: int) -> VectorRows:
    seqs = np.asarray([r[0] for r in rows], dtype=np.int64)
    versions = np.asarray([r[1] for r in rows], dtype=np.int64)
    if not rows:
        return VectorRows(seqs, versions, np.zeros((0, dimension), dtype=np.float32))
    vectors = np.stack([_array(r[2]) for r in rows])
    return VectorRows(seqs, versions, vectors)


def _array(value: Any) -> np.ndarray:
    # the binary loader of pgvector yields Vector objects, the text one numpy arrays
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


async def get_many_by_seq(
    conn: Conn,
    tenant_id: uuid.UUID,
    seqs: Sequence[int],
    scope: Scope,
    flt: CompiledFilter | None,
) -> dict[int, Memory]:
    """Visible rows among ``seqs`` that still match tenant, scope and filter."""
    params: list[Any] = []
    where = repo.where_clause(tenant_id, scope, flt, params)
    params.append(list(seqs))
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM memories m WHERE {} AND m.seq = ANY(%s)").format(
            repo.COLUMNS, where
        ),
        params,
    )
    return {int(r["seq"]): repo.row_to_memory(r) for r in await cur.fetchall()}


async def matching_seqs(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, limit: int
) -> list[int]:
    """Seqs of the visible rows that match, at most ``limit`` of them."""
    params: list[Any] = []
    where = repo.where_clause(tenant_id, scope, flt, params)
    params.append(limit)
    cur = await conn.execute(
        sql.SQL("SELECT m.seq FROM memories m WHERE {} LIMIT %s").format(where), params
    )
    return [int(r[0]) for r in await cur.fetchall()]
