"""Migrations: an empty database reaches the current schema, and re-running changes nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from memory_service.infra import migrate
from memory_service.infra.db import connect_sync


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )


def schema_snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple]]:
    return {
        "columns": conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall(),
        "indexes": conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "ORDER BY 1, 2"
        ).fetchall(),
        "triggers": conn.execute(
            "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
        ).fetchall(),
        "functions": conn.execute(
            "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' ORDER BY 1"
        ).fetchall(),
    }


def test_empty_database_reaches_current_schema_and_rerun_is_a_no_op(empty_database: str) -> None:
    with connect_sync(empty_database) as conn:
        applied = migrate.apply_migrations(conn, 384)
        assert applied == [m.version for m in migrate.available_migrations()]
        assert migrate.is_current(conn)
        first = schema_snapshot(conn)
        tables = {row[0] for row in first["columns"]}
        assert {"tenants", "api_keys", "memories", "memory_history", "schema_migrations"} <= tables
        assert any("hnsw" in row[2] for row in first["indexes"])
        assert migrate.apply_migrations(conn, 384) == []
        assert schema_snapshot(conn) == first
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in migrate.available_migrations()]


def test_two_processes_migrating_at_once_apply_each_file_once(empty_database: str) -> None:
    """Both runs are forced to overlap: the test holds the migration lock until both
    are seen waiting for it, then lets go; one applies everything, the other nothing."""
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect_sync(empty_database) as conn:
                results.append(migrate.apply_migrations(conn, 384))
        except BaseException as exc:
            errors.append(exc)

    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 "
        "AND objid = %s AND NOT granted"
    )
    with connect_sync(empty_database) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate._LOCK_KEY,))
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while holder.execute(waiting, (migrate._LOCK_KEY,)).fetchone() != (2,):
            assert time.monotonic() < deadline, "the two runs never both waited for the lock"
            assert not errors, errors
            time.sleep(0.02)
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate._LOCK_KEY,))
        for t in threads:
            t.join(60)
    assert not errors
    everything = [m.version for m in migrate.available_migrations()]
    assert sorted(results, key=len) == [[], everything]


def test_a_model_of_another_dimension_is_refused(empty_database: str) -> None:
    from memory_service.errors import Conflict

    with connect_sync(empty_database) as conn:
        migrate.apply_migrations(conn, 384)
        with pytest.raises(Conflict, match="384-dimensional"):
            migrate.apply_migrations(conn, 768)
