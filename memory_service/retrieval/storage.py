"""SQL of the retrieval features: BM25 keyword ranking, dedupe look-ups, tenant settings.

Like ``memories.repository`` every function takes an open connection (the caller
owns the transaction) and confines each statement to one tenant. Keyword ranking
reads the generated ``fts_english`` / ``fts_simple`` columns of migration 0004.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import Memory, Scope
from memory_service.memories.repository import COLUMNS, VISIBLE, row_to_memory, where_clause

Conn = AsyncConnection[Any]

# the configuration whose tsvector is stored; any other one is computed per row
STORED_CONFIG = "english"
_DOCUMENT_TEXT = sql.SQL("m.content || ' ' || coalesce(m.context, '')")


@dataclass(frozen=True, slots=True)
class Bm25Params:
    k1: float
    b: float
    simple_weight: float  # weight of the language-neutral field against the language one
    stats_cap: int  # rows read at most to estimate the corpus size and mean length


def _language_field(config: str) -> sql.Composable:
    if config == STORED_CONFIG:
        return sql.SQL("m.fts_english")
    return sql.SQL("to_tsvector({}::regconfig, {})").format(sql.Literal(config), _DOCUMENT_TEXT)


def any_of(lexemes: Sequence[str]) -> str:
    """A tsquery text matching any of ``lexemes``, each quoted verbatim (no stemming)."""
    quoted = ["'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in lexemes]
    return " | ".join(quoted)


async def check_text_search_config(conn: Conn, config: str) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = %s)", (config,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def query_lexemes(conn: Conn, config: str, text: str) -> tuple[list[str], list[str]]:
    """The query's lexemes under ``config`` and under 'simple'.

    A 'simple' word that ``config`` drops as a stop word is left out: "the" or
    "what" would otherwise make every memory a keyword match.
    """
    cur = await conn.execute(
        "SELECT tsvector_to_array(to_tsvector(%s::regconfig, %s)), "
        "ARRAY(SELECT w FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig, %s))) "
        "AS w WHERE to_tsvector(%s::regconfig, w) <> ''::tsvector)",
        (config, text, text, config),
    )
    row = await cur.fetchone()
    assert row is not None
    return list(row[0] or []), list(row[1] or [])


async def keyword_search(
    conn: Conn,
    tenant_id: uuid.UUID,
    scope: Scope,
    flt: CompiledFilter | None,
    config: str,
    lexemes: tuple[list[str], list[str]],
    k: int,
    params: Bm25Params,
) -> list[tuple[Memory, float]]:
    """Rows matching any query lexeme, ranked by BM25 summed over both fields.

    Document frequencies come from the candidate rows (every row holding a term
    is a candidate), the corpus size and mean length from the visible rows of the
    scope and filter, read up to ``stats_cap`` rows. Document length is counted in
    distinct lexemes, which is what a tsvector keeps. Every step is a
    materialised CTE, computed once: right after a bulk load the planner's row
    estimates are stale, and an inlined aggregate can end up rescanned per row.
    """
    language, plain = lexemes
    if not language and not plain:
        return []
    field = _language_field(config)
    cand_params: list[Any] = []
    cand_where = where_clause(tenant_id, scope, flt, cand_params)
    stats_params: list[Any] = []
    stats_where = where_clause(tenant_id, scope, flt, stats_params)
    query = sql.SQL(
        """
        WITH cand AS MATERIALIZED (
            SELECT m.seq, {field} AS lv, m.fts_simple AS sv FROM memories m
            WHERE {cand_where} AND ({field} @@ %s::tsquery OR m.fts_simple @@ %s::tsquery)
        ),
        stats AS MATERIALIZED (
            SELECT greatest(count(*), 1)::float8 AS n,
                   greatest(avg(length(s.lv)), 1)::float8 AS lavg,
                   greatest(avg(length(s.sv)), 1)::float8 AS savg
            FROM (SELECT {field} AS lv, m.fts_simple AS sv FROM memories m
                  WHERE {stats_where} LIMIT %s) AS s
        ),
        terms AS (
            SELECT c.seq, 1 AS f, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf,
                   length(c.lv) AS dl
            FROM cand c, unnest(ts_filter(setweight(c.lv, 'A', %s::text[]), '{{a}}')) AS t
            UNION ALL
            SELECT c.seq, 2 AS f, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf,
                   length(c.sv) AS dl
            FROM cand c, unnest(ts_filter(setweight(c.sv, 'A', %s::text[]), '{{a}}')) AS t
        ),
        df AS MATERIALIZED (SELECT f, lexeme, count(*)::float8 AS df FROM terms GROUP BY f, lexeme),
        scored AS (
            SELECT t.seq, sum(
                (CASE WHEN t.f = 1 THEN 1.0 ELSE %s END)
                * ln(1.0 + (greatest(s.n, df.df) - df.df + 0.5) / (df.df + 0.5))
                * t.tf * (%s + 1.0)
                / (t.tf + %s * (1.0 - %s + %s * t.dl / (CASE WHEN t.f = 1 THEN s.lavg ELSE s.savg END)))
            ) AS score
            FROM terms t JOIN df USING (f, lexeme) CROSS JOIN stats s
            GROUP BY t.seq
        )
        SELECT {cols}, sc.score FROM scored sc JOIN memories m ON m.seq = sc.seq
        ORDER BY sc.score DESC, m.seq LIMIT %s
        """
    ).format(field=field, cand_where=cand_where, stats_where=stats_where, cols=COLUMNS)
    all_params = [
        *cand_params,
        any_of(language) or "''",
        any_of(plain) or "''",
        *stats_params,
        params.stats_cap,
        language,
        plain,
        params.simple_weight,
        params.k1,
        params.k1,
        params.b,
        params.b,
        k,
    ]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, all_params)
    rows = await cur.fetchall()
    return [(row_to_memory(r), float(r["score"])) for r in rows]


async def last_seen(conn: Conn, tenant_id: uuid.UUID, ids: Sequence[str]) -> dict[str, datetime]:
    """``last_seen_at`` of the rows among ``ids`` that have one."""
    cur = await conn.execute(
        "SELECT id, last_seen_at FROM memories WHERE tenant_id = %s AND id = ANY(%s::uuid[]) "
        "AND last_seen_at IS NOT NULL",
        (tenant_id, list(ids)),
    )
    return {str(r[0]): r[1] for r in await cur.fetchall()}


async def nearest_in_scope(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, vector: np.ndarray
) -> tuple[str, float] | None:
    """The live memory of exactly this scope closest to ``vector`` (exact scan)."""
    cur = await conn.execute(
        sql.SQL(
            "WITH c AS MATERIALIZED (SELECT m.id, m.embedding FROM memories m "
            "WHERE m.tenant_id = %s AND m.user_id IS NOT DISTINCT FROM %s "
            "AND m.agent_id IS NOT DISTINCT FROM %s AND m.run_id IS NOT DISTINCT FROM %s "
            "AND m.namespace IS NOT DISTINCT FROM %s AND {}) "
            "SELECT c.id, 1.0 - (c.embedding <=> %s) FROM c ORDER BY c.embedding <=> %s LIMIT 1"
        ).format(VISIBLE),
        (tenant_id, scope.user_id, scope.agent_id, scope.run_id, scope.namespace, vector, vector),
    )
    row = await cur.fetchone()
    return (str(row[0]), float(row[1])) if row else None


async def merge_into(
    conn: Conn,
    tenant_id: uuid.UUID,
    memory_id: str,
    metadata: dict[str, Any],
    importance: float,
    expires_at: datetime | None,
) -> Memory:
    """Fold a re-added memory into ``memory_id``: metadata merged (new keys win),
    the higher importance kept, the later expiry kept (none beats any), last seen
    now, version + 1 (the history trigger records the change)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "UPDATE memories AS m SET metadata = m.metadata || %s, "
            "importance = greatest(m.importance, %s), "
            "expires_at = CASE WHEN m.expires_at IS NULL OR %s::timestamptz IS NULL THEN NULL "
            "ELSE greatest(m.expires_at, %s::timestamptz) END, "
            "last_seen_at = now(), updated_at = now(), version = m.version + 1 "
            "WHERE m.tenant_id = %s AND m.id = %s RETURNING {}, m.embedding"
        ).format(COLUMNS),
        (Jsonb(metadata), importance, expires_at, expires_at, tenant_id, memory_id),
    )
    row = await cur.fetchone()
    assert row is not None, "the row was found in this transaction"
    return row_to_memory(row, with_embedding=True)


async def get_tenant_settings(conn: Conn, tenant_id: uuid.UUID) -> tuple[bool, float] | None:
    cur = await conn.execute(
        "SELECT dedupe, dedupe_threshold FROM tenant_retrieval_settings WHERE tenant_id = %s",
        (tenant_id,),
    )
    row = await cur.fetchone()
    return (bool(row[0]), float(row[1])) if row else None


async def put_tenant_settings(
    conn: Conn, tenant_id: uuid.UUID, dedupe: bool, threshold: float
) -> None:
    await conn.execute(
        "INSERT INTO tenant_retrieval_settings (tenant_id, dedupe, dedupe_threshold) "
        "VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET dedupe = EXCLUDED.dedupe, "
        "dedupe_threshold = EXCLUDED.dedupe_threshold, updated_at = now()",
        (tenant_id, dedupe, threshold),
    )
