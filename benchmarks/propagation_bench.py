"""How soon another process's in-process indexes see a write, beside a strong read.

Two runtimes (A and B, each with its own data directory and indexes, as two
service processes have) share one fresh embedded PostgreSQL. A adds a memory
with a supplied vector, and B's default (eventual) search is polled until its
FAISS index returns that memory as itself; the same for a keyword write through
B's keyword index, and for a delete. Baseline from the same run: B's
``consistency: "strong"`` search right after the write, which applies the pending
change itself. The tests only check that a change arrives within a generous
deadline (``tests/helpers.py: PROPAGATION_DEADLINE_S``); this measures how soon.

Writes ``benchmarks/results/propagation.json`` and ``propagation.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, percentiles
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.infra import db
from memory_service.infra.migrate import run_migrations
from memory_service.memories.models import NewMemory, SearchRequest
from memory_service.runtime import Runtime

RESULTS = Path(__file__).resolve().parent / "results"


async def until(check: Callable[[], Awaitable[bool]], limit: float = 30.0) -> float:
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > limit:
            raise TimeoutError("the change never arrived")
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def measure(a: Runtime, b: Runtime, tid: uuid.UUID, trials: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((trials * 2, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    samples: dict[str, list[float]] = {"vector": [], "keyword": [], "delete": [], "strong": []}

    async def top(vector: np.ndarray, **extra: Any) -> tuple[str, str | None]:
        found = await b.search.search(tid, SearchRequest(embedding=vector.tolist(), k=1, **extra))
        return found.strategy, found.results[0].memory.id if found.results else None

    for i in range(trials):
        vector = vectors[i]
        memory, _ = await a.memories.add(tid, NewMemory(f"vector {i}", embedding=vector.tolist()))

        async def seen(v: np.ndarray = vector, mid: str = memory.id) -> bool:
            return await top(v) == ("faiss", mid)

        samples["vector"].append(await until(seen))
        word = f"zeppelin{i}x"
        written, _ = await a.memories.add(tid, NewMemory(f"a {word} over the harbour"))

        async def keyword_seen(w: str = word, mid: str = written.id) -> bool:
            found = await b.search.search(tid, SearchRequest(w, k=1, mode="keyword"))
            return [hit.memory.id for hit in found.results] == [mid]

        samples["keyword"].append(await until(keyword_seen))
        await a.memories.delete(tid, memory.id)

        async def gone(v: np.ndarray = vector, mid: str = memory.id) -> bool:
            strategy, found = await top(v)
            return strategy == "faiss" and found != mid

        samples["delete"].append(await until(gone))
        # the baseline: a strong read of a fresh write, which catches up by itself
        other = vectors[trials + i]
        fresh, _ = await a.memories.add(tid, NewMemory(f"strong {i}", embedding=other.tolist()))
        started = time.perf_counter()
        assert await top(other, consistency="strong") == ("faiss", fresh.id)
        samples["strong"].append(time.perf_counter() - started)
    return {name: percentiles(values) for name, values in samples.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="propagation-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work))
    url = db.resolve_database_url(settings)
    run_migrations(url, 384)
    embedder = HashEmbedder(384)
    runtimes: list[Runtime] = []
    try:
        for name in "ab":
            (work / name).mkdir()
            configured = settings.with_(database_url=url, data_dir=str(work / name))
            runtimes.append(await Runtime.start(configured, embedder=embedder))
        a, b = runtimes
        tenant, _ = await a.tenants.create_tenant("propagation")
        tid = uuid.UUID(tenant.id)
        await a.memories.add(tid, NewMemory("seed", embedding=[1.0] + [0.0] * 383))
        assert b.hot_search is not None and await b.hot_search.wait_ready(120)
        await b.search.search(tid, SearchRequest(embedding=[1.0] + [0.0] * 383, k=1))  # held now
        load_before = os.getloadavg()
        result = await measure(a, b, tid, args.trials)
        return {
            "trials": args.trials,
            "poll_interval_s": settings.faiss_poll_interval_s,
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "machine": machine(),
            **result,
        }
    finally:
        for runtime in runtimes:
            await runtime.close()
        db.stop_embedded(settings)


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("vector insert seen by B's FAISS index", "vector"),
        ("keyword insert seen by B's keyword index", "keyword"),
        ("delete gone from B's FAISS answers", "delete"),
        ("baseline: B's strong read of a fresh write", "strong"),
    ]
    load = result["load_average"]
    lines = [
        "# Another process sees a write",
        "",
        (
            f"{result['trials']} trials; load average {load['before'][0]:.2f} before, "
            f"{load['after'][0]:.2f} after; poll interval {result['poll_interval_s']} s."
        ),
        "",
        "| change | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        lines.append("| {} | {p50_ms} | {p95_ms} | {p99_ms} |".format(label, **result[key]))
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="writes timed per kind")
    result = asyncio.run(run(parser.parse_args()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "propagation.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "propagation.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
