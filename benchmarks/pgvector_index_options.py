"""How to keep pgvector's HNSW graph off the ingest path: the options side by side.

Writes N supplied-vector memories in 1,000-row batches through the repository
(the SQL the service runs, no HTTP) into one embedded PostgreSQL, once per
option, emptying the table in between: ``inline`` (every insert walks the
graph, as shipped before), ``deferred`` (rows arrive outside the partial graph
and the index worker's batches add them after), the same with the rows sent by
``COPY`` through the staging table (what a batch does now), ``rebuild`` (no graph while
loading, ``CREATE INDEX`` afterwards) and ``none`` (no graph at all: the
fallback becomes an exact scan, timed here at N rows). Prints and writes
``benchmarks/results/pgvector_index_options.{json,md}``.

    python -m benchmarks.pgvector_index_options --size 10k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection
from tqdm import tqdm

from benchmarks.common import machine, parse_size, synthetic_vectors
from memory_service.config import Settings
from memory_service.infra import db, migrate
from memory_service.memories import repository as repo
from memory_service.memories.models import Scope
from memory_service.memories.validation import content_hash

BATCH = 1000
RESULTS = Path(__file__).parent / "results"
CREATE_GRAPH = (
    "CREATE INDEX memories_embedding_hnsw ON memories USING hnsw "
    "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE indexed"
)


def items(vectors: np.ndarray, start: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, min(start + BATCH, len(vectors))):
        text = f"memory number {i}"
        out.append({
            "content": text, "content_hash": content_hash(text), "scope": Scope(),
            "metadata": {}, "importance": 0.5, "embedding": vectors[i], "expires_at": None,
        })
    return out


async def load(
    conn: AsyncConnection[Any], tid: uuid.UUID, vectors: np.ndarray, *,
    indexed: bool, label: str, copy: bool = False,
) -> float:
    insert = repo.insert_staged if copy else repo.insert_many
    started = time.perf_counter()
    for start in tqdm(range(0, len(vectors), BATCH), desc=label, unit="batch"):
        async with conn.transaction():
            await insert(conn, tid, items(vectors, start), indexed=indexed)
    return time.perf_counter() - started


async def timed(conn: AsyncConnection[Any], statement: str) -> float:
    started = time.perf_counter()
    await conn.execute(statement)
    return time.perf_counter() - started


async def run_options(url: str, vectors: np.ndarray) -> dict[str, Any]:
    n = len(vectors)
    out: dict[str, Any] = {}
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await register_vector_async(conn)
        cur = await conn.execute("INSERT INTO tenants (name) VALUES ('bench') RETURNING id")
        row = await cur.fetchone()
        assert row is not None
        tid: uuid.UUID = row[0]

        async def reset() -> None:
            await conn.execute("TRUNCATE memories, memory_history, memory_versions, memory_changes")

        took = await load(conn, tid, vectors, indexed=True, label="inline")
        out["inline"] = {"ingest_per_s": n / took}
        await reset()
        took = await load(conn, tid, vectors, indexed=False, label="deferred")
        started = time.perf_counter()
        while await repo.index_backlog(conn, 500):
            pass
        drain = time.perf_counter() - started
        out["deferred"] = {"ingest_per_s": n / took, "drain_s": drain, "drain_per_s": n / drain}
        await reset()
        took = await load(conn, tid, vectors, indexed=False, label="deferred, COPY", copy=True)
        out["deferred_copy"] = {"ingest_per_s": n / took}
        await reset()
        await conn.execute("DROP INDEX memories_embedding_hnsw")
        took = await load(conn, tid, vectors, indexed=True, label="rebuild")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        build = await timed(conn, CREATE_GRAPH)
        out["rebuild"] = {"ingest_per_s": n / took, "build_s": build, "build_per_s": n / build}
        await reset()
        await conn.execute("DROP INDEX memories_embedding_hnsw")
        took = await load(conn, tid, vectors, indexed=True, label="none")
        scan = await exact_scan_s(conn, tid, vectors[:20])
        out["none"] = {"ingest_per_s": n / took, "exact_scan_ms": scan * 1000}
        await conn.execute(CREATE_GRAPH)
    return out


async def exact_scan_s(conn: AsyncConnection[Any], tid: uuid.UUID, queries: np.ndarray) -> float:
    """Median time of an exact top-10 over the tenant's rows (the no-graph fallback)."""
    times = []
    for q in queries:
        async with conn.transaction():
            started = time.perf_counter()
            await repo.vector_search(conn, tid, Scope(), None, q, 10, exact=True, ef_search=0)
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def markdown(result: dict[str, Any]) -> str:
    o = result["options"]
    base = o["inline"]["ingest_per_s"]
    d, r, z = o["deferred"], o["rebuild"], o["none"]
    drains = f"worker drains {d['drain_per_s']:,.0f} rows/s ({d['drain_s']:.1f} s)"
    catch_up = {
        "inline (graph per row)": "none needed",
        "deferred (partial graph + worker)": drains,
        "deferred, rows sent by COPY": drains,
        "rebuild (CREATE INDEX after)": f"build {r['build_s']:.1f} s over the whole table",
        "none (exact scan fallback)": (
            f"none; exact top-10 over {result['size']:,} rows: {z['exact_scan_ms']:.0f} ms"
        ),
    }
    copied = o["deferred_copy"]["ingest_per_s"]
    rates = [base, d["ingest_per_s"], copied, r["ingest_per_s"], z["ingest_per_s"]]
    title = (
        f"pgvector index options, {result['size']:,} supplied-vector memories in 1,000-row "
        "batches through the repository (one run, shared 2-core box)"
    )
    rows = [title, "", "| option | ingest rows/s | vs inline | index catch-up |", "|---|---:|---:|---|"]
    for (name, note), rate in zip(catch_up.items(), rates, strict=True):
        rows.append(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {note} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10k")
    args = parser.parse_args()
    n = parse_size(args.size)
    data_dir = Path(tempfile.mkdtemp(prefix="pgvector-options-"))
    data_dir.chmod(0o755)
    settings = Settings(data_dir=str(data_dir))
    url = db.resolve_database_url(settings)
    try:
        with db.connect_sync(url) as conn:
            migrate.apply_migrations(conn, 384)
        options = asyncio.run(run_options(url, synthetic_vectors(n, seed=7)))
    finally:
        db.stop_embedded(settings)
    result = {"size": n, "machine": machine(), "options": options}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pgvector_index_options.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / "pgvector_index_options.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
