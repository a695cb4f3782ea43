"""Keyword and hybrid search: the held keyword index against PostgreSQL, beside vector search.

``python -m benchmarks.keyword_search --size 10k`` starts the core in a
temporary data directory (embedded PostgreSQL; the hash embedder, since every
query here brings its vector), ingests ``size`` sentences of SciFact abstracts
(real words, so real posting-list lengths) with supplied synthetic vectors,
each in one of ten users, and times single searches through
``SearchService.search`` (the service path without HTTP), SciFact test queries
as the text, in one run:

- vector search with a supplied vector (the baseline of the ratios),
- keyword search from the held index and from PostgreSQL full-text search,
- vector search with the query text (embedded by the hash embedder: about free),
  and the same text with no mode (the service's default ranking, hybrid),
- hybrid (the query text), its keyword half held or in SQL,
- keyword search scoped to one user (a tenth of the rows), held and in SQL.

Reported: p50/p95/p99 per path, keyword p50 over vector p50, and how many times
faster the held index answers than SQL. Results go to
``benchmarks/results/keyword_search_<size>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import common
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from memory_service.search.keyword import KeywordRanking
from memory_service.search.service import SearchService

K = 10
USERS = 10
ROOT = Path(__file__).resolve().parent.parent


def sentences(data: Path, n: int) -> list[str]:
    """``n`` sentences of SciFact abstracts (cycled, each tagged, when it has fewer)."""
    docs, _ = common.read_scifact(data, 10**6)
    pieces = [s for d in docs for s in re.split(r"(?<=\.)\s+", d) if len(s) > 20]
    return [pieces[i % len(pieces)] + ("" if i < len(pieces) else f" ({i})") for i in range(n)]


async def ingest(rt: Runtime, texts: list[str], vectors: np.ndarray) -> uuid.UUID:
    tenant, _ = await rt.tenants.create_tenant("keyword-bench")
    tid = uuid.UUID(tenant.id)
    for s in tqdm(range(0, len(texts), 1000), desc="ingest", unit="batch"):
        items = [
            NewMemory(texts[i], Scope(user_id=f"u{i % USERS}"), embedding=vectors[i].tolist())
            for i in range(s, min(len(texts), s + 1000))
        ]
        await rt.memories.add_many(tid, items)
    t = rt.hot_search.indexes.get(tid) if rt.hot_search else None
    while t is not None and (not t.ready or t.rebuilding):
        await asyncio.sleep(0.2)
    return tid


async def timed(
    service: SearchService, tid: uuid.UUID, requests: list[SearchRequest]
) -> tuple[dict[str, float], set[str]]:
    times, strategies = [], set()
    for request in tqdm(requests, leave=False):
        started = time.perf_counter()
        result = await service.search(tid, request)
        times.append(time.perf_counter() - started)
        strategies.add(result.strategy)
    return common.percentiles(times), strategies


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n = common.parse_size(args.size)
    texts = sentences(Path(args.data), n)
    vectors = common.synthetic_vectors(n, seed=7)
    _, query_texts = common.read_scifact(Path(args.data), 1)
    query_texts = query_texts[: args.queries]
    query_vectors = common.synthetic_vectors(len(query_texts), seed=8)
    settings = Settings.from_env(
        data_dir=str(work / "data"), faiss_snapshot_interval_s=3600.0, faiss_memory_budget_mb=8192
    )
    rt = await Runtime.start(settings, embedder=HashEmbedder())
    try:
        tid = await ingest(rt, texts, vectors)
        held = rt.search
        in_sql = SearchService(
            rt.pool, rt.settings, rt.embedder, held.validate, held.vectors,
            KeywordRanking(held.keyword.database, None),
        )  # fmt: skip
        user = Scope(user_id="u3")
        cases: dict[str, tuple[SearchService, list[SearchRequest]]] = {}
        for label, service in (("held", held), ("sql", in_sql)):
            cases[f"keyword ({label})"] = (service, [
                SearchRequest(q, k=K, mode="keyword") for q in query_texts
            ])  # fmt: skip
            cases[f"keyword, one user ({label})"] = (service, [
                SearchRequest(q, k=K, mode="keyword", scope=user) for q in query_texts
            ])  # fmt: skip
            cases[f"hybrid ({label})"] = (service, [
                SearchRequest(q, k=K, mode="hybrid") for q in query_texts
            ])  # fmt: skip
        cases = {
            "vector (supplied)": (held, [
                SearchRequest(embedding=v.tolist(), k=K) for v in query_vectors
            ]),
            "vector (query text)": (held, [
                SearchRequest(q, k=K, mode="vector") for q in query_texts
            ]),
            # no mode: the service's default ranking (hybrid)
            "default (query text)": (held, [SearchRequest(q, k=K) for q in query_texts]),
            **cases,
        }  # fmt: skip
        rows: dict[str, Any] = {}
        for name, (service, requests) in tqdm(cases.items(), desc="paths"):
            await timed(service, tid, requests[:20])  # warm caches
            stats, strategies = await timed(service, tid, requests)
            rows[name] = {**stats, "strategies": sorted(strategies)}
        t = rt.hot_search.indexes.get(tid) if rt.hot_search else None
        keyword_mb = t.keywords.memory_bytes() / 2**20 if t and t.keywords else 0.0
    finally:
        await rt.close()
    base = rows["vector (supplied)"]["p50_ms"]
    for name, row in rows.items():
        row["x_vector_p50"] = round(row["p50_ms"] / base, 2)
        held_name = name.replace("(sql)", "(held)")
        if name != held_name:
            row["x_held_p50"] = round(row["p50_ms"] / rows[held_name]["p50_ms"], 1)
    return {
        "size": n,
        "k": K,
        "queries": len(query_texts),
        "keyword_index_mb_estimate": round(keyword_mb, 1),
        "machine": common.machine(),
        "paths": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    title = (
        f"# Keyword search, {report['size']:,} memories (k={report['k']}, "
        f"{report['queries']} SciFact queries, one process, no HTTP)"
    )
    memory = f"Keyword index estimate: {report['keyword_index_mb_estimate']} MB."
    lines = [
        title,
        "",
        f"Machine: {report['machine']}. {memory}",
        "",
        "| path | p50 ms | p95 ms | p99 ms | p50 / vector p50 | SQL p50 / held p50 | answered by |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["paths"].items():
        lines.append(
            f"| {name} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | "
            f"{row['x_vector_p50']}x | {row.get('x_held_p50', '')} | "
            f"{', '.join(row['strategies'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="10k", help="10k, 100k ...")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyword-bench-") as work:
        report = asyncio.run(measure(args, Path(work)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"keyword_search_{args.size}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
