"""The search benchmark over HTTP: a real ``memory-service serve`` process on the bench's data.

``search_bench`` builds the database in-process, then hands it to this module:
a server started on the same database, the time until it answers and until its
FAISS index serves, single-query latency with supplied vectors, and throughput
with 1, 4 and 16 concurrent clients for a fixed time each.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import common


def measure_over_http(
    database_url: str, tid_key: str, work: Path, queries: np.ndarray, k: int, seconds: float
) -> dict[str, Any]:
    server = common.ServiceProcess(database_url, work / "data", work / "server.log")
    try:
        ready_s = server.start()
        import httpx

        headers = {"Authorization": f"Bearer {tid_key}"}
        client = httpx.Client(base_url=server.base_url, timeout=60)
        started = time.monotonic()
        body = {"embedding": queries[0].tolist(), "k": k}
        while (
            client.post("/v1/memories/search", json=body, headers=headers).json()["strategy"]
            != "faiss"
        ):
            time.sleep(0.05)
        faiss_ready_s = ready_s + time.monotonic() - started
        times, strategies = [], set()
        for q in tqdm(queries, desc="HTTP single queries"):
            payload = {"embedding": q.tolist(), "k": k}
            t0 = time.perf_counter()
            r = client.post("/v1/memories/search", json=payload, headers=headers)
            times.append(time.perf_counter() - t0)
            strategies.add(r.json()["strategy"])
        out = {
            "process_ready_s": round(ready_s, 2),
            "restart_to_faiss_ready_s": round(faiss_ready_s, 2),
            "server_rss_mb": common.rss_mb(server.process.pid if server.process else None),
            "single": {**common.percentiles(times), "strategies": sorted(strategies)},
            "throughput": asyncio.run(throughput(server.base_url, headers, queries, k, seconds)),
        }
        client.close()
        return out
    finally:
        server.stop()


async def throughput(
    base_url: str, headers: dict[str, str], queries: np.ndarray, k: int, seconds: float
) -> dict[str, Any]:
    out = {}
    payloads = [{"embedding": q.tolist(), "k": k} for q in queries]
    for clients in tqdm((1, 4, 16), desc="HTTP throughput"):
        out[str(clients)] = await load(base_url, headers, clients, payloads, seconds)
    return out


async def load(
    base_url: str,
    headers: dict[str, str],
    clients: int,
    payloads: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    import httpx

    times: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:

        async def worker(first: int) -> None:
            i = first
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await http.post(
                    "/v1/memories/search", json=payloads[i % len(payloads)], headers=headers
                )
                r.raise_for_status()
                times.append(time.perf_counter() - t0)
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - started
    return {"qps": round(len(times) / elapsed, 1), **common.percentiles(times)}
