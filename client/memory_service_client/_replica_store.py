"""The replica's local SQLite file: entities, the feed cursor, and the offline write queue.

Each entity keeps two copies: ``server`` (the last version the feed delivered)
and ``body`` (what reads answer: the server copy with this client's unpushed
edits on top). The outbox holds at most one pending operation per entity (later
offline edits fold into it) with the server version it was based on, which is
what goes out as ``If-Match``. A feed page and the cursor after it are applied in
one SQLite transaction, so a crash never applies a change twice or skips one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    server TEXT, body TEXT NOT NULL, embedding BLOB,
    PRIMARY KEY (type, id)
);
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, id TEXT NOT NULL,
    op TEXT NOT NULL, base_version INTEGER, base TEXT, fields TEXT NOT NULL,
    UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    n: int
    type: str
    id: str
    op: str  # "create" | "update" | "delete"
    base_version: int | None
    base: dict[str, Any] | None  # the server's entity the edit started from
    fields: dict[str, Any]


class LocalStore:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- entities -----------------------------------------------------------------
    def apply_server(
        self,
        db: sqlite3.Connection,
        type_: str,
        id_: str,
        version: int,
        entity: dict[str, Any] | None,
        embedding: bytes | None,
    ) -> None:
        """A change from the server: newer versions only; local edits stay on top."""
        row = db.execute(
            "SELECT version FROM entities WHERE type = ? AND id = ?", (type_, id_)
        ).fetchone()
        if row is not None and row[0] > version:
            return
        pending = self.pending_for(db, type_, id_) is not None
        if entity is None:
            if pending:
                db.execute(
                    "UPDATE entities SET version = ?, server = NULL WHERE type = ? AND id = ?",
                    (version, type_, id_),
                )
            else:
                db.execute("DELETE FROM entities WHERE type = ? AND id = ?", (type_, id_))
            return
        server = json.dumps(entity)
        if row is None:
            db.execute(
                "INSERT INTO entities (type, id, version, server, body, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (type_, id_, version, server, server, embedding),
            )
        elif pending:
            db.execute(
                "UPDATE entities SET version = ?, server = ?, "
                "embedding = coalesce(?, embedding) WHERE type = ? AND id = ?",
                (version, server, embedding, type_, id_),
            )
        else:
            db.execute(
                "UPDATE entities SET version = ?, server = ?, body = ?, embedding = ? "
                "WHERE type = ? AND id = ?",
                (version, server, server, embedding, type_, id_),
            )

    def apply_page(self, db: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
        """Feed items in order: one statement per kind for entities without local edits."""
        pending = {(r[0], r[1]) for r in db.execute("SELECT type, id FROM outbox")}
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for c in items:
            if (c["type"], c["id"]) in pending:
                self.apply_server(db, c["type"], c["id"], c["version"], c["entity"], c["blob"])
            elif c["entity"] is None:
                deletes.append((c["type"], c["id"], c["version"]))
            else:
                text = json.dumps(c["entity"])
                upserts.append((c["type"], c["id"], c["version"], text, text, c["blob"]))
        # ids are never reused, so applying every upsert before every tombstone keeps order
        db.executemany(
            "INSERT INTO entities (type, id, version, server, body, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, id) DO UPDATE SET "
            "version = excluded.version, server = excluded.server, body = excluded.body, "
            "embedding = excluded.embedding WHERE excluded.version >= entities.version",
            upserts,
        )
        db.executemany(
            "DELETE FROM entities WHERE type = ? AND id = ? AND version <= ?", deletes
        )

    def put_local(
        self, db: sqlite3.Connection, type_: str, id_: str, body: dict[str, Any]
    ) -> None:
        db.execute(
            "INSERT INTO entities (type, id, version, server, body) VALUES (?, ?, 0, NULL, ?) "
            "ON CONFLICT (type, id) DO UPDATE SET body = excluded.body",
            (type_, id_, json.dumps(body)),
        )

    def remove(self, db: sqlite3.Connection, type_: str, id_: str) -> None:
        db.execute("DELETE FROM entities WHERE type = ? AND id = ?", (type_, id_))

    def get(self, type_: str, id_: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """(local view, server copy) of one entity."""
        with self._lock:
            row = self._db.execute(
                "SELECT body, server FROM entities WHERE type = ? AND id = ?", (type_, id_)
            ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), (json.loads(row[1]) if row[1] else None)

    def all(self, type_: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM entities WHERE type = ? ORDER BY rowid", (type_,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def embeddings(self) -> list[tuple[dict[str, Any], bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body, embedding FROM entities "
                "WHERE type = 'memory' AND embedding IS NOT NULL"
            ).fetchall()
        return [(json.loads(r[0]), r[1]) for r in rows]

    def count(self, type_: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM entities WHERE type = ?", (type_,)
            ).fetchone()
        return int(row[0])

    # -- outbox -------------------------------------------------------------------
    def pending_for(self, db: sqlite3.Connection, type_: str, id_: str) -> Pending | None:
        row = db.execute(
            "SELECT n, type, id, op, base_version, base, fields FROM outbox "
            "WHERE type = ? AND id = ?",
            (type_, id_),
        ).fetchone()
        return None if row is None else _pending(row)

    def queue(self, db: sqlite3.Connection, item: Pending) -> None:
        db.execute(
            "INSERT INTO outbox (type, id, op, base_version, base, fields) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, id) DO UPDATE SET "
            "op = excluded.op, fields = excluded.fields",
            (
                item.type,
                item.id,
                item.op,
                item.base_version,
                None if item.base is None else json.dumps(item.base),
                json.dumps(item.fields),
            ),
        )

    def dequeue(self, db: sqlite3.Connection, n: int) -> None:
        db.execute("DELETE FROM outbox WHERE n = ?", (n,))

    def outbox(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT n, type, id, op, base_version, base, fields FROM outbox ORDER BY n"
            ).fetchall()
        return [_pending(r) for r in rows]


def _pending(row: tuple[Any, ...]) -> Pending:
    return Pending(
        n=row[0],
        type=row[1],
        id=row[2],
        op=row[3],
        base_version=row[4],
        base=None if row[5] is None else json.loads(row[5]),
        fields=json.loads(row[6]),
    )
