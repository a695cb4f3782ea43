"""A pgvector index behind the common interface: a table of (id, embedding) with HNSW.

The service's own pgvector path searches the ``memories`` table directly (see
``memory_service.memories.repository``); this class puts pgvector beside the
other indexes for the shared tests and the benchmarks. It owns one table, made
by ``create()`` and removed by ``drop()``; the data lives in PostgreSQL, so
``save`` only records which table holds it. pgvector filters after its HNSW
scan, so an allow-filter that leaves fewer than ``k`` rows falls back to an
exact scan of the allowed rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from indexers.base import Allow, Ids, Matrix, Scores, allowed_ids, as_ids, as_matrix


class PgvectorIndex:
    kind = "pgvector"

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        dimension: int,
        *,
        hnsw_m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 100,
        exact_max: int = 2000,
    ) -> None:
        self.conn = conn  # autocommit, with pgvector registered
        self.table = table
        self._dimension = dimension
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.exact_max = exact_max

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def _t(self) -> sql.Identifier:
        return sql.Identifier(self.table)

    def create(self, *, hnsw: bool = True) -> None:
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, embedding vector({}))"
            ).format(self._t, sql.Literal(int(self._dimension)))
        )
        if hnsw:
            self.create_hnsw()

    def create_hnsw(self) -> None:
        self.conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{self.table}_hnsw"),
                self._t,
                sql.Literal(int(self.hnsw_m)),
                sql.Literal(int(self.ef_construction)),
            )
        )

    def drop(self) -> None:
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t))

    @property
    def size(self) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._t)).fetchone()
        return int(row[0]) if row else 0

    def add(self, ids: npt.ArrayLike, vectors: Matrix) -> None:
        id_array, matrix = as_ids(ids), as_matrix(vectors, self._dimension)
        statement = sql.SQL(
            "INSERT INTO {} (id, embedding) VALUES (%s, %s) "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding"
        ).format(self._t)
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(statement, list(zip(id_array.tolist(), matrix, strict=True)))

    def remove(self, ids: npt.ArrayLike) -> None:
        self.conn.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._t), (as_ids(ids).tolist(),)
        )

    def search(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        allow: Allow | None = None,
        *,
        ef_search: int | None = None,
        exact: bool = False,
    ) -> tuple[Ids, Scores]:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        allowed: list[int] | None = None
        if allow is not None:
            if callable(allow):
                every = np.asarray(
                    [r[0] for r in self.conn.execute(sql.SQL("SELECT id FROM {}").format(self._t))],
                    dtype=np.int64,
                )
                allowed = every[np.asarray(allow(every), dtype=bool)].tolist()
            else:
                allowed = allowed_ids(allow).tolist()
            exact = exact or len(allowed) <= self.exact_max
        rows = self._query(q, k, allowed, exact=exact, ef_search=ef_search or self.ef_search)
        if allowed is not None and not exact and len(rows) < min(k, len(allowed)):
            rows = self._query(q, k, allowed, exact=True, ef_search=0)
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        return ids, np.asarray([1.0 - r[1] for r in rows], dtype=np.float32)

    def _query(
        self,
        q: npt.NDArray[np.float32],
        k: int,
        allowed: list[int] | None,
        *,
        exact: bool,
        ef_search: int,
    ) -> list[tuple[int, float]]:
        where = sql.SQL("TRUE") if allowed is None else sql.SQL("id = ANY(%s)")
        params: list[Any] = [] if allowed is None else [allowed]
        with self.conn.transaction():
            if exact:
                statement = sql.SQL(
                    "WITH c AS MATERIALIZED (SELECT id, embedding FROM {} WHERE {}) "
                    "SELECT id, embedding <=> %s AS d FROM c ORDER BY d, id LIMIT %s"
                ).format(self._t, where)
                return self.conn.execute(statement, [*params, q, k]).fetchall()
            ef = max(1, min(1000, int(max(ef_search, k))))
            self.conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
            statement = sql.SQL(
                "SELECT id, embedding <=> %s AS d FROM {} WHERE {} ORDER BY embedding <=> %s LIMIT %s"
            ).format(self._t, where)
            return self.conn.execute(statement, [q, *params, q, k]).fetchall()

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "meta.json").write_text(
            json.dumps(
                {
                    "kind": self.kind,
                    "dim": self._dimension,
                    "table": self.table,
                    "hnsw_m": self.hnsw_m,
                    "ef_construction": self.ef_construction,
                    "ef_search": self.ef_search,
                    "exact_max": self.exact_max,
                }
            )
        )

    @classmethod
    def load(cls, path: Path, conn: psycopg.Connection[Any]) -> PgvectorIndex:
        meta = json.loads((path / "meta.json").read_text())
        return cls(
            conn,
            meta["table"],
            int(meta["dim"]),
            hnsw_m=int(meta["hnsw_m"]),
            ef_construction=int(meta["ef_construction"]),
            ef_search=int(meta["ef_search"]),
            exact_max=int(meta["exact_max"]),
        )
