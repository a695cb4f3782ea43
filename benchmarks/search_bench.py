"""Search benchmark: FAISS, pgvector HNSW and exact search side by side, in one run.

``python -m benchmarks.search_bench --size 10k|100k|1M`` starts the core in a
temporary data directory (embedded PostgreSQL, real model), ingests synthetic
clustered 384-d vectors through the service (and SciFact documents as text),
then measures for each path: recall@10 against exact search, single-query
p50/p95/p99 in-process and over HTTP (a real uvicorn server, supplied vectors),
throughput with 1/4/16 clients, filtered search at 0.1/1/10/50% selectivity,
ingest throughput, index build and restart-to-ready time, and resident memory.
``--faiss-only`` (the default at 1M, where a pgvector build does not fit a
2-core box) measures the FAISS index in-process only. Results go to
``benchmarks/results/search_<size>.{json,md}`` and a recall-vs-latency PNG.
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
from tqdm import tqdm

from benchmarks import common
from benchmarks.search_large import faiss_in_process
from benchmarks.search_report import write_outputs
from benchmarks.search_served import measure_over_http
from indexers.exact import ExactIndex
from indexers.faiss_index import FaissIndex
from memory_service.config import Settings
from memory_service.memories import repository as repo
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from memory_service.search.indexes import TenantIndexes, faiss_params
from memory_service.search.service import SearchService
from memory_service.search.vector import VectorSearch

K = 10
FAISS_EFS = (16, 32, 48, 64, 128, 256)
PGVECTOR_EFS = (10, 20, 40, 80, 160, 320)
SELECTIVITY = {"0.1%": ("s1000", 1000), "1%": ("s100", 100), "10%": ("s10", 10), "50%": ("s2", 2)}


def meta_for(i: int) -> dict[str, int]:
    return {"s1000": i % 1000, "s100": i % 100, "s10": i % 10, "s2": i % 2}


async def timed(fn: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - started)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.n = common.parse_size(args.size)
        self.report: dict[str, Any] = {"size": self.n, "k": K, "machine": common.machine()}
        self.http_target: tuple[str, str] | None = None
        self.vectors = common.synthetic_vectors(self.n, seed=args.seed)
        self.queries = common.synthetic_vectors(args.queries, seed=args.seed + 1)
        # MEMORY_* variables apply (e.g. MEMORY_FAISS_HNSW_M), the bench's own choices win
        self.settings = Settings.from_env(
            data_dir=str(work / "data"),
            admin_token=common.ADMIN_TOKEN,
            db_pool_max=24,
            faiss_snapshot_interval_s=3600.0,
            faiss_memory_budget_mb=8192,
        )

    # -- phases ----------------------------------------------------------------------------
    async def ingest(self, rt: Runtime) -> str:
        tenant, _ = await rt.tenants.create_tenant("bench")
        tid = str(tenant.id)
        started, batch = time.perf_counter(), 1000
        with tqdm(total=self.n, desc="ingest (supplied vectors)", unit="vec") as bar:
            for s in range(0, self.n, batch):
                items = [
                    NewMemory(
                        f"synthetic {i}", metadata=meta_for(i), embedding=self.vectors[i].tolist()
                    )
                    for i in range(s, min(self.n, s + batch))
                ]
                await rt.memories.add_many(uuid.UUID(tid), items)
                bar.update(len(items))
        elapsed = time.perf_counter() - started
        self.report["ingest_vectors"] = {
            "rows": self.n,
            "seconds": round(elapsed, 1),
            "rows_per_s": round(self.n / elapsed, 1),
        }
        return tid

    async def ingest_text(self, rt: Runtime) -> tuple[str, list[str]]:
        docs, queries = common.read_scifact(Path(self.args.data), self.args.scifact_docs)
        tenant, _ = await rt.tenants.create_tenant("scifact")
        tid = str(tenant.id)
        started = time.perf_counter()
        for s in tqdm(range(0, len(docs), 100), desc="ingest (SciFact text)", unit="batch"):
            await rt.memories.add_many(uuid.UUID(tid), [NewMemory(d) for d in docs[s : s + 100]])
        elapsed = time.perf_counter() - started
        self.report["ingest_text"] = {
            "rows": len(docs),
            "seconds": round(elapsed, 1),
            "rows_per_s": round(len(docs) / elapsed, 1),
        }
        return tid, queries[: self.args.queries]

    async def tenant_vectors(self, rt: Runtime, tid: str) -> tuple[np.ndarray, np.ndarray]:
        ids, vecs = [], []
        async with rt.pool.connection() as conn, conn.transaction():
            async for rows in repo.stream_tenant_rows(conn, uuid.UUID(tid), 384):
                ids.append(rows.seqs)
                vecs.append(rows.vectors)
        return np.concatenate(ids), np.concatenate(vecs)

    async def sweep(
        self,
        rt: Runtime,
        tid: str,
        ids: np.ndarray,
        vecs: np.ndarray,
        queries: np.ndarray,
        label: str,
    ) -> dict[str, Any]:
        """Exact truth, FAISS HNSW ef sweep and pgvector HNSW ef sweep over one tenant."""
        out: dict[str, Any] = {"vectors": len(ids), "queries": len(queries)}
        exact = ExactIndex(vecs.shape[1])
        exact.add(ids, vecs)
        truth, times = [], []
        for q in queries:
            started = time.perf_counter()
            top, _ = exact.search(q, K)
            times.append(time.perf_counter() - started)
            truth.append(top.tolist())
        out["exact_numpy"] = common.percentiles(times)
        params = faiss_params(self.settings)
        started = time.perf_counter()
        hnsw = FaissIndex(vecs.shape[1], params, hnsw=True)
        with tqdm(total=len(ids), desc=f"FAISS HNSW build ({label})", unit="vec") as bar:
            for s in range(0, len(ids), 20_000):
                hnsw.add(ids[s : s + 20_000], vecs[s : s + 20_000])
                bar.update(min(20_000, len(ids) - s))
        out["faiss_build_s"] = round(time.perf_counter() - started, 2)
        out["faiss"] = []
        for ef in tqdm(FAISS_EFS, desc=f"FAISS ef sweep ({label})"):
            found: list[list[int]] = []
            times = []
            for q in queries:
                started = time.perf_counter()
                got, _ = hnsw.search(q, K, ef_search=ef)
                times.append(time.perf_counter() - started)
                found.append(got.tolist())
            out["faiss"].append(
                {
                    "ef_search": ef,
                    "recall": common.recall_at_k(found, truth),
                    **common.percentiles(times),
                }
            )
        out["pgvector"] = []
        if not self.args.faiss_only:
            t = uuid.UUID(tid)
            for ef in tqdm(PGVECTOR_EFS, desc=f"pgvector ef sweep ({label})"):
                found, times = [], []
                for q in queries:
                    started = time.perf_counter()
                    async with rt.pool.connection() as conn, conn.transaction():
                        rows = await repo.vector_search(
                            conn, t, Scope(), None, q, K, exact=False, ef_search=ef
                        )
                    times.append(time.perf_counter() - started)
                    found.append([m.seq for m, _ in rows])
                out["pgvector"].append(
                    {
                        "ef_search": ef,
                        "recall": common.recall_at_k(found, truth),
                        **common.percentiles(times),
                    }
                )
            times = []
            for q in queries[:20]:
                started = time.perf_counter()
                async with rt.pool.connection() as conn, conn.transaction():
                    await repo.vector_search(conn, t, Scope(), None, q, K, exact=True, ef_search=0)
                times.append(time.perf_counter() - started)
            out["exact_sql"] = common.percentiles(times)
        return out

    async def service_paths(self, rt: Runtime, tid: str, seq_of: dict[int, int]) -> None:
        """The whole service path (search + SQL re-check), FAISS vs pgvector, with filters."""
        exact = ExactIndex(384)
        exact.add(np.arange(self.n), self.vectors)
        # the same search service without the in-process path: pgvector answers everything
        in_database = SearchService(
            rt.pool,
            rt.settings,
            rt.embedder,
            rt.search.validate,
            VectorSearch(rt.pool, rt.settings, None),
            rt.search.keyword,
        )
        rows: dict[str, Any] = {}
        cases = {"none": None, **{name: key for name, key in SELECTIVITY.items()}}
        for name, spec in tqdm(cases.items(), desc="service paths (filters)"):
            allow, flt = None, None
            if spec is not None:
                key, mod = spec
                flt = {f"metadata.{key}": 1}
                allow = np.flatnonzero(np.arange(self.n) % mod == 1)
            truth = [exact.search(q, K, allow)[0].tolist() for q in self.queries]
            for path, service in (("faiss", rt.search), ("pgvector", in_database)):
                if path == "pgvector" and self.args.faiss_only:
                    continue
                answers: list[list[int]] = []
                strategies: set[str] = set()

                async def one(
                    i: int,
                    found: list = answers,
                    strategies: set = strategies,
                    flt: Any = flt,
                    service: SearchService = service,
                ) -> None:
                    request = SearchRequest(embedding=self.queries[i].tolist(), k=K, filter=flt)
                    result = await service.search(uuid.UUID(tid), request)
                    strategies.add(result.strategy)
                    found.append([seq_of[int(h.memory.content.split()[1])] for h in result.results])

                times = await timed(one, len(self.queries))
                matching = self.n if allow is None else len(allow)
                short = sum(1 for f in answers if len(f) < min(K, matching))
                truth_seq = [[seq_of[i] for i in t] for t in truth]
                rows[f"{path}/{name}"] = {
                    "recall": common.recall_at_k(answers, truth_seq),
                    "short_answers": short,
                    "strategies": sorted(strategies),
                    **common.percentiles(times),
                }
        self.report["service_paths"] = rows

    async def restart_times(self, rt: Runtime, tid: str) -> None:
        hot = rt.hot_search
        started = time.perf_counter()
        await hot.indexes.snapshot_all(hot.follower.mark)
        self.report["snapshot_write_s"] = round(time.perf_counter() - started, 2)
        out: dict[str, Any] = {}
        for label, root in (("snapshot", hot.indexes.root), ("rebuild", self.work / "empty")):
            fresh = TenantIndexes(rt.pool, self.settings, 384, rt.supervisor)
            fresh.root = root
            started = time.perf_counter()
            await fresh.admit(uuid.UUID(tid), wait=True)
            out[label] = round(time.perf_counter() - started, 2)
            t = fresh.ready(uuid.UUID(tid))
            assert t is not None and t.index is not None and t.index.size == self.n
            out[f"{label}_loaded_from"] = t.loaded_from
            await fresh.close()
        self.report["restart_to_ready_in_process_s"] = out

    def http(self, database_url: str, tid_key: str) -> None:
        self.report["http"] = measure_over_http(
            database_url, tid_key, self.work, self.queries, K, self.args.throughput_seconds
        )

    # -- the whole run ---------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        if self.args.faiss_only:
            return self.faiss_only()
        rt = await Runtime.start(self.settings)
        try:
            tid = await self.ingest(rt)
            async with rt.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT seq, content FROM memories WHERE tenant_id = %s", (uuid.UUID(tid),)
                )
                seq_of = {int(c.split()[1]): int(s) for s, c in await cur.fetchall()}
            hot = rt.hot_search
            t = hot.indexes.get(uuid.UUID(tid))
            while t is not None and (not t.ready or t.rebuilding):
                await asyncio.sleep(0.2)
            ids = np.asarray([seq_of[i] for i in range(self.n)], dtype=np.int64)
            self.report["synthetic"] = await self.sweep(
                rt, tid, ids, self.vectors, self.queries, "synthetic"
            )
            await self.service_paths(rt, tid, seq_of)
            sci_tid, sci_queries = await self.ingest_text(rt)
            sci_ids, sci_vecs = await self.tenant_vectors(rt, sci_tid)
            qv = await rt.embedder.embed_async(sci_queries)
            self.report["scifact"] = await self.sweep(rt, sci_tid, sci_ids, sci_vecs, qv, "SciFact")
            await self.restart_times(rt, tid)
            self.report["bench_process_rss_mb"] = common.rss_mb()
            self.http_target = (rt.database_url, await rt.tenants.create_key(tid))
        finally:
            await rt.close()
        return self.report

    def faiss_only(self) -> dict[str, Any]:
        self.report["synthetic"] = faiss_in_process(
            self.vectors, self.queries, faiss_params(self.settings), self.work, K, FAISS_EFS
        )
        return self.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10k", help="10k, 100k or 1M")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--scifact-docs", type=int, default=500)
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--faiss-only", action="store_true", help="FAISS in-process only")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if common.parse_size(args.size) >= 1_000_000:
        args.faiss_only = True
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        report = asyncio.run(bench.run())
        if bench.http_target is not None and not args.skip_http:
            bench.http(*bench.http_target)  # the database is still up: this process holds it
    report["args"] = {k: v for k, v in vars(args).items() if k != "out"}
    paths = write_outputs(report, Path(args.out), args.size.lower())
    print(json.dumps(report, indent=2))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
