"""What the Python client costs on top of bare httpx: the same search, side by side.

Starts ``memory-service serve`` (embedded PostgreSQL, hash embedder so the model
does not dominate), adds N memories, then runs the same vector search through a
bare ``httpx.Client`` and through ``MemoryClient``, interleaved one by one so both
see the same machine load, and reports p50/p95 of each and their ratio. Both use
one keep-alive connection; the bare path does exactly what a hand-written agent
would do: post the JSON, check the status, decode the body.

    .venv/bin/python -m benchmarks.client_overhead --memories 2000 --searches 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from memory_service_client import MemoryClient
from tqdm import tqdm

from benchmarks.common import ADMIN_TOKEN, ServiceProcess, machine, percentiles
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.infra.migrate import run_migrations

RESULTS = Path(__file__).resolve().parent / "results"


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="client-bench-"))
    work.chmod(0o755)
    url = db.resolve_database_url(Settings(data_dir=str(work)))
    run_migrations(url, 384)
    service = ServiceProcess(url, work, work / "service.log")
    service.start()
    try:
        with MemoryClient(service.base_url, admin_token=ADMIN_TOKEN) as admin:
            key = admin.create_tenant("bench")["api_key"]
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.memories + args.searches, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=service.base_url, headers=headers, timeout=60) as bare, \
                MemoryClient(service.base_url, key, timeout=60) as client:
            for start in tqdm(range(0, args.memories, 500), desc="ingest"):
                items = [
                    {"content": f"memory {i}", "embedding": vectors[i].tolist()}
                    for i in range(start, min(start + 500, args.memories))
                ]
                client.add_memories(items)
            queries = [vectors[args.memories + i].tolist() for i in range(args.searches)]
            for q in queries[:20]:  # warm both paths and the index
                bare.post("/v1/memories/search", json={"embedding": q, "k": 10}).json()
                client.search(embedding=q, k=10)
            bare_s: list[float] = []
            client_s: list[float] = []
            for i, q in enumerate(tqdm(queries, desc="search")):
                for path in (("bare", "client") if i % 2 == 0 else ("client", "bare")):
                    started = time.perf_counter()
                    if path == "bare":
                        response = bare.post("/v1/memories/search", json={"embedding": q, "k": 10})
                        response.raise_for_status()
                        assert len(response.json()["results"]) == 10
                        bare_s.append(time.perf_counter() - started)
                    else:
                        assert len(client.search(embedding=q, k=10)["results"]) == 10
                        client_s.append(time.perf_counter() - started)
    finally:
        service.stop()
    bare_p, client_p = percentiles(bare_s), percentiles(client_s)
    return {
        "machine": machine(),
        "memories": args.memories,
        "searches": args.searches,
        "bare_httpx_ms": bare_p,
        "memory_client_ms": client_p,
        "p50_ratio": client_p["p50_ms"] / bare_p["p50_ms"],
        "mean_ratio": statistics.mean(client_s) / statistics.mean(bare_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=1000)
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "client_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    b, c = result["bare_httpx_ms"], result["memory_client_ms"]
    print(f"bare httpx    p50 {b['p50_ms']} ms  p95 {b['p95_ms']} ms")
    print(f"MemoryClient  p50 {c['p50_ms']} ms  p95 {c['p95_ms']} ms")
    print(f"p50 ratio MemoryClient / bare httpx: {result['p50_ratio']:.3f}")


if __name__ == "__main__":
    main()
