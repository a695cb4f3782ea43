"""SQL of the retrieval features outside the ``memories`` table.

The ``tenant_retrieval_settings`` table (the semantic dedupe default of each
tenant) and the text-search look-ups that prepare a keyword query: whether a
configuration exists and which lexemes a query text makes. Ranking memories
(BM25) is ``memories.repository.keyword_search``.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[Any]


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
