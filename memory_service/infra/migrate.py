"""Numbered SQL migrations with a version table.

Files ``migrations/NNNN_name.sql`` are applied in order, each in its own
transaction, under a PostgreSQL advisory lock so that two processes starting at
once apply each file exactly once. ``__EMBEDDING_DIM__`` in a file is replaced by
the embedding dimension, a validated integer. Re-running is a no-op.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from memory_service.errors import Conflict
from memory_service.infra import db

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6D656D6F  # "memo": one advisory lock for all migration runs
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
DIM_TOKEN = "__EMBEDDING_DIM__"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str


def available_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("memory_service.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version number: {versions}")
    return found


def applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]


def apply_migrations(conn: psycopg.Connection[Any], embedding_dim: int) -> list[int]:
    """Apply every pending migration; returns the versions applied by this call.

    ``conn`` must be in autocommit mode; each file runs in its own transaction.
    """
    if not isinstance(embedding_dim, int) or not 1 <= embedding_dim <= 16000:
        raise ValueError(f"invalid embedding dimension {embedding_dim!r}")
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        _check_dimension(conn, embedding_dim)
        for migration in pending_migrations(conn):
            text = migration.text.replace(DIM_TOKEN, str(int(embedding_dim)))
            with conn.transaction():
                conn.execute(sql.SQL(text))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.debug("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    if applied:
        log.info(
            "applied %d migration%s (%04d to %04d)",
            len(applied), "" if len(applied) == 1 else "s", applied[0], applied[-1],
        )
    return applied


def _check_dimension(conn: psycopg.Connection[Any], embedding_dim: int) -> None:
    row = conn.execute("SELECT to_regclass('service_state') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return
    stored = conn.execute("SELECT value FROM service_state WHERE name = 'embedding_dim'").fetchone()
    if stored and int(stored[0]) != embedding_dim:
        raise Conflict(
            f"the database stores {stored[0]}-dimensional embeddings but the model makes "
            f"{embedding_dim}-dimensional ones; use a model of the same dimension or a new database"
        )


def is_current(conn: psycopg.Connection[Any]) -> bool:
    return not pending_migrations(conn)


async def applied_count(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many migrations the database records as applied (readiness checks)."""
    cur = await conn.execute("SELECT count(*) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def run_migrations(url: str, dimension: int) -> list[int]:
    """Apply every pending migration over a connection of its own to ``url``."""
    with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
        return apply_migrations(conn, dimension)
