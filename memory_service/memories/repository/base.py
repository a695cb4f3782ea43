"""The ground the memories repository stands on: its columns, the named statements of
``memories/queries.sql``, and the tenant/scope/visibility clause every read shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from memory_service.infra.db import named_query
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SCOPE_FIELDS, Scope

Conn = AsyncConnection[Any]

# the columns an export carries and an import or a migration writes as given
TABLE = "memories"
COPY_COLUMNS = (
    "id", "content", "content_hash", "user_id", "agent_id", "run_id", "namespace", "metadata",
    "importance", "embedding", "context", "created_at", "updated_at", "expires_at", "version",
)
COLUMNS = sql.SQL(
    "m.seq, m.id, m.content, m.user_id, m.agent_id, m.run_id, m.namespace, m.metadata, "
    "m.importance, m.created_at, m.updated_at, m.expires_at, m.version, m.key, m.context"
)
VISIBLE = sql.SQL("(m.expires_at IS NULL OR m.expires_at > now())")


def query(name: str) -> sql.SQL:
    return named_query("memory_service.memories", "queries.sql", name)


async def fetch_rows(
    conn: Conn, statement: sql.Composed | sql.SQL, params: Sequence[Any], *, binary: bool = False
) -> list[Any]:
    """Rows as dicts; ``binary`` where embeddings come back: a vector in binary is a copy
    of its bytes, in text 384 numbers to print and parse (about 0.1 ms a row)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(statement, params, binary=binary)
    return await cur.fetchall()


def scope_clause(scope: Scope, params: list[Any], alias: str = "m") -> sql.Composable:
    """The scope's given fields as equalities on table ``alias`` (TRUE when none is)."""
    parts: list[sql.Composable] = []
    for name in SCOPE_FIELDS:
        value = getattr(scope, name)
        if value is not None:
            parts.append(sql.SQL("{} = %s").format(sql.Identifier(alias, name)))
            params.append(value)
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


def where_clause(
    tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, params: list[Any]
) -> sql.Composable:
    """``tenant AND scope AND visible AND filter``; appends to ``params`` in order."""
    params.append(tenant_id)
    parts: list[sql.Composable] = [
        sql.SQL("m.tenant_id = %s"),
        scope_clause(scope, params),
        VISIBLE,
    ]
    if flt is not None:
        parts.append(flt.clause)
        params.extend(flt.params)
    return sql.SQL(" AND ").join(parts)
