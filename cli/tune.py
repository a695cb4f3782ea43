"""``memory-service tune``: measure recall against exact search and pick FAISS efSearch."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from dataclasses import asdict

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from tqdm import tqdm

from indexers.faiss_index import FaissParams
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.memories import repository as repo
from memory_service.tuning import EF_LADDER, TuneResult, crossover, tune

NAME = "tune"
HELP = "measure recall against exact search and pick FAISS efSearch"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", help="tenant id (default: the tenant with most memories)")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=200, help="stored vectors sampled as queries")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.add_argument(
        "--flat-max",
        action="store_true",
        help="instead: time a flat scan against the graph at growing sizes of the tenant's "
        "vectors and print the size up to which a tenant's index should stay flat",
    )


async def load_vectors(
    url: str, tenant: uuid.UUID | None
) -> tuple[uuid.UUID | None, np.ndarray, np.ndarray]:
    """One tenant's seqs and vectors (the largest tenant unless one is named)."""
    conn = await psycopg.AsyncConnection.connect(url)
    async with conn:
        await register_vector_async(conn)
        if tenant is None:
            sizes = await repo.tenant_sizes(conn)
            tenant = max(sizes, key=lambda t: sizes[t]) if sizes else None
        if tenant is None:
            return None, np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids, vectors = [], []
        async with conn.transaction():
            bar = tqdm(desc="loading vectors", unit="vec")
            async for rows in repo.stream_tenant_rows(conn, tenant, 0):
                ids.append(rows.seqs)
                vectors.append(rows.vectors)
                bar.update(len(rows))
            bar.close()
    if not ids:
        return tenant, np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return tenant, np.concatenate(ids), np.concatenate(vectors)


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = db.resolve_database_url(settings)
    named = uuid.UUID(args.tenant) if args.tenant else None
    tenant, ids, vectors = asyncio.run(load_vectors(url, named))
    if tenant is None:
        print("no memories to tune on")
        return 1
    if len(ids) < args.k + 1:
        print(f"tenant {tenant} has too few memories ({len(ids)}) to tune on")
        return 1
    params = FaissParams(
        hnsw_m=settings.faiss_hnsw_m,
        ef_construction=settings.faiss_ef_construction,
        ef_search=settings.faiss_ef_search,
    )
    if args.flat_max:
        return _flat_max(tenant, vectors, params, args)
    result = tune(ids, vectors, params, target=args.target_recall, k=args.k, queries=args.queries)
    _report(tenant, result, args)
    if result.chosen_ef_search is None:
        print(f"no efSearch up to {EF_LADDER[-1]} reaches recall {args.target_recall}")
        return 1
    print(f"MEMORY_FAISS_EF_SEARCH={result.chosen_ef_search}")
    return 0


def _report(tenant: uuid.UUID, result: TuneResult, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return
    print(f"tenant {tenant}: {result.vectors} vectors, {result.queries} queries, k={result.k}")
    print(f"{'efSearch':>9} {'recall':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for m in result.measurements:
        print(f"{m.ef_search:>9} {m.recall:>8.4f} {m.p50_ms:>8.3f} {m.p95_ms:>8.3f}")


def _flat_max(
    tenant: uuid.UUID, vectors: np.ndarray, params: FaissParams, args: argparse.Namespace
) -> int:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # as the service runs its searches
        flat_max, points = crossover(
            vectors, params, target=args.target_recall, k=args.k, queries=args.queries
        )
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2))
    else:
        print(
            f"tenant {tenant}: one query, flat scan against the graph (efSearch {params.ef_search})"
        )
        print(f"{'vectors':>9} {'flat ms':>8} {'graph ms':>9} {'recall':>8}")
        for p in points:
            print(
                f"{p.vectors:>9} {p.flat_p50_ms:>8.3f} {p.graph_p50_ms:>9.3f} {p.graph_recall:>8.4f}"
            )
    print(f"MEMORY_FAISS_FLAT_MAX={flat_max}")
    return 0
