"""What diversity (MMR) adds to a search: the same search with and without it, in one run.

``python -m benchmarks.mmr_bench --size 5k`` starts the core in a temporary data
directory (embedded PostgreSQL; the hash embedder, since the vector queries bring their
vectors and the model is beside the point), ingests ``size`` sentences of SciFact
abstracts with supplied synthetic vectors in ten users (``keyword_search.ingest``), and
times single searches through ``SearchService.search`` (the service path without HTTP)
with one BLAS thread, as ``serve`` runs:

- vector search with a supplied vector and hybrid with SciFact query text, at k = 10
  and k = 50, each without diversity and with ``diversity`` 0.5, the two interleaved
  query by query (which goes first alternates), so both see the same machine;
- each from a tenant held in process (FAISS and the keyword index) and from the same
  service without the in-process path (pgvector and SQL BM25 answer).

Reported per case: p50/p95 of both, the added p50 (diverse p50 minus plain p50) and the
median of the per-query differences, and the load average before and after. A diverse
search ranks a deeper pool (``max(3k, MEMORY_RERANK_CANDIDATES)``, 100 and 150 here)
before it picks k, so the added cost is MMR's whole: the deeper ranking, the candidates'
embeddings and the picking. Results go to ``benchmarks/results/mmr_<label>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import common
from benchmarks.keyword_search import ingest, sentences
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.memories.models import SearchRequest
from memory_service.runtime import Runtime
from memory_service.search.keyword import KeywordRanking
from memory_service.search.service import SearchService
from memory_service.search.vector import VectorSearch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DIVERSITY = 0.5


async def paired(
    service: SearchService, tid: uuid.UUID, requests: list[SearchRequest]
) -> tuple[list[float], list[float], set[str]]:
    """Seconds of each request without and with diversity, interleaved."""
    plain, diverse, strategies = [], [], set()
    for i, request in enumerate(requests):
        with_mmr = SearchRequest(
            request.query, request.embedding, request.k, mode=request.mode,
            options={"diversity": DIVERSITY},
        )  # fmt: skip
        order = (request, with_mmr) if i % 2 == 0 else (with_mmr, request)
        for one in order:
            started = time.perf_counter()
            result = await service.search(tid, one)
            elapsed = time.perf_counter() - started
            (diverse if one is with_mmr else plain).append(elapsed)
            strategies.add(result.strategy)
    return plain, diverse, strategies


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
    common.client_blas_on_one_thread()  # as ``serve`` does (cli/serve.py: one_blas_thread)
    rt = await Runtime.start(settings, embedder=HashEmbedder())
    rows: dict[str, Any] = {}
    load_before = os.getloadavg()
    try:
        tid = await ingest(rt, texts, vectors)
        held = rt.search
        in_database = SearchService(
            rt.pool, rt.settings, rt.embedder, held.validate,
            VectorSearch(rt.pool, rt.settings, None), KeywordRanking(held.keyword.database, None),
        )  # fmt: skip
        load_before = os.getloadavg()
        for path, service in (("held", held), ("not held", in_database)):
            for k in (10, 50):
                cases = {
                    "vector": [SearchRequest(embedding=v.tolist(), k=k, mode="vector") for v in query_vectors],
                    "hybrid": [SearchRequest(q, k=k, mode="hybrid") for q in query_texts],
                }  # fmt: skip
                for mode, requests in cases.items():
                    name = f"{mode}, k={k}, {path}"
                    await paired(service, tid, requests[:20])  # warm caches
                    plain, diverse, strategies = await paired(service, tid, tqdm(requests, desc=name, leave=False))
                    rows[name] = summary(plain, diverse, strategies)
                    print(name, rows[name], flush=True)
    finally:
        await rt.close()
    return {
        "label": args.label,
        "size": n,
        "queries": len(query_texts),
        "diversity": DIVERSITY,
        "machine": common.machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cases": rows,
    }


def summary(plain: list[float], diverse: list[float], strategies: set[str]) -> dict[str, Any]:
    a, b = common.percentiles(plain), common.percentiles(diverse)
    differences = (np.asarray(diverse) - np.asarray(plain)) * 1000.0
    return {
        "plain_p50_ms": a["p50_ms"],
        "plain_p95_ms": a["p95_ms"],
        "diverse_p50_ms": b["p50_ms"],
        "diverse_p95_ms": b["p95_ms"],
        "added_p50_ms": round(b["p50_ms"] - a["p50_ms"], 3),
        "added_median_pair_ms": round(float(np.median(differences)), 3),
        "strategies": sorted(strategies),
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        (
            f"MMR ({r['label']}): {r['size']:,} memories, {r['queries']} queries, diversity "
            f"{r['diversity']}; load average {r['load_average_before']} before, "
            f"{r['load_average_after']} after."
        ),
        "",
        (
            "| search | plain p50 ms | diverse p50 ms | added p50 ms | added, median of pairs ms "
            "| plain p95 ms | diverse p95 ms | answered by |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in r["cases"].items():
        lines.append(
            f"| {name} | {c['plain_p50_ms']} | {c['diverse_p50_ms']} | {c['added_p50_ms']} | "
            f"{c['added_median_pair_ms']} | {c['plain_p95_ms']} | {c['diverse_p95_ms']} | "
            f"{', '.join(c['strategies'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="5k")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmr-bench-") as work:
        report = asyncio.run(measure(args, Path(work)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "mmr_" + "".join(c if c.isalnum() else "_" for c in args.label)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
