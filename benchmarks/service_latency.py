"""End-to-end service numbers over real HTTP: start-up, ingest throughput, search latency.

Starts the service exactly as a user does (``make run``, embedded PostgreSQL, packaged
model) in a fresh data directory and measures, in one run:

- seconds from ``make run`` (with ``.venv`` present) to ``/ready`` answering 200;
- ingest throughput in memories per second for batches of 1,000 texts (the service
  embeds them) and for batches of 1,000 supplied vectors;
- short-text ingest (LoCoMo dialogue turns: one or two sentences, as agents write) in
  batches of 1,000, beside the raw throughput of the same model on the same backend
  (``MEMORY_EMBEDDING_BACKEND``, default onnx) embedding the same texts in this
  process while the service idles, batch by batch in turn with the service's. Each
  timed step starts on a quiet box: before the raw model's turn, the benchmark waits
  until pgvector's index worker has put the service's last batch into its graph (work
  the service defers until a load is quiet), so that neither side times the other's
  work; that deferred work is reported beside the ratio;
- p50/p95 of a text-query search and of a vector-query search over N memories, each
  beside the p50 of ``GET /health`` measured interleaved in the same run, so that the
  ratio search/health factors out the machine's speed and the HTTP stack. Searches
  are timed once pgvector's index worker has put the loaded rows into its graph
  (``memory_index_backlog`` reaches 0 in ``/metrics``): that catch-up runs on the
  same cores once the loads stop, and is reported beside the rest.

Texts are SciFact abstracts (``--data``, default ``../shared/data``); queries are the
SciFact queries, each asked once so the query cache does not flatter the text path.
Writes JSON and a markdown table under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from memory_service.embedding.embeddings import Embedder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load_texts(data: Path, n: int) -> tuple[list[str], list[str]]:
    corpus = data / "scifact" / "corpus.jsonl"
    texts: list[str] = []
    with corpus.open() as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')}. {doc['text']}"[:2000])
    queries = [json.loads(line)["text"] for line in (data / "scifact" / "queries.jsonl").open()]
    # more memories than SciFact has: vary the abstracts so none is an exact duplicate
    out = [
        texts[i % len(texts)] + ("" if i < len(texts) else f" (variant {i // len(texts)})")
        for i in range(n)
    ]
    return out, queries


def short_texts(data: Path, n: int) -> list[str]:
    from benchmarks.eval.datasets import load_locomo

    docs, _ = load_locomo(data)
    return [f"{d.content} ({i // len(docs)})" for i, d in enumerate(docs * (n // len(docs) + 1))][
        :n
    ]


def raw_model(data_dir: Path) -> Embedder:
    """The configured backend in this process (reusing the export the service made in
    ``data_dir``), warmed up."""
    from memory_service.config import Settings
    from memory_service.embedding.embeddings import embedder_from_settings

    settings = Settings.from_env({**os.environ, "MEMORY_DATA_DIR": str(data_dir)})
    embedder = embedder_from_settings(settings)
    embedder.embed(["a warm-up sentence"] * 64)
    return embedder


def backend_label() -> str:
    """The embedding backend the service runs with, ``-int8`` for int8 ONNX weights."""
    from memory_service.config import Settings

    settings = Settings.from_env(dict(os.environ))
    int8 = settings.embedding_backend == "onnx" and settings.embedding_quantize
    return settings.embedding_backend + ("-int8" if int8 else "")


def start_service(port: int, data_dir: Path, admin: str) -> tuple[subprocess.Popen[bytes], float]:
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_ADMIN_TOKEN": admin,
        "MEMORY_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/ready"
    while time.perf_counter() - started < 300:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the service exited during start-up")
        time.sleep(0.05)
    raise RuntimeError("the service did not become ready in 300 s")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def pgvector_backlog(client: httpx.Client) -> float:
    gauge = 'memory_index_backlog{index="pgvector"}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(gauge):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("/metrics reports no pgvector backlog")


def graph_catch_up(client: httpx.Client, limit_s: float = 900, *, wrote: bool = False) -> float:
    """Seconds until ``/metrics`` reports no row waiting for pgvector's graph.

    The gauge is as of the index worker's last look (one a second while idle): right
    after a write (``wrote``) it may still read 0, so first wait up to 3 s for a look
    that sees the new rows."""
    started = time.perf_counter()
    while wrote and time.perf_counter() - started < 3 and not pgvector_backlog(client):
        time.sleep(0.1)
    while time.perf_counter() - started < limit_s:
        if pgvector_backlog(client) == 0:
            return time.perf_counter() - started
        time.sleep(0.25)
    raise RuntimeError(f"pgvector's graph did not catch up in {limit_s:.0f} s")


def timed(client: httpx.Client, method: str, path: str, **kw: Any) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = client.request(method, path, **kw)
    return (time.perf_counter() - t0) * 1000.0, r


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts, queries = load_texts(Path(args.data), args.size)
    data_dir = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    admin = "bench-admin"
    proc, ready_s = start_service(args.port, data_dir, admin)
    result: dict[str, Any] = {
        "ready_seconds": round(ready_s, 2),
        "memories": args.size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "backend": backend_label(),
    }
    try:
        base = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=base, timeout=300) as client:
            r = client.post(
                "/v1/admin/tenants",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            client.headers["Authorization"] = f"Bearer {r.json()['api_key']}"

            # ingest: texts embedded by the service, batches of 1,000
            text_secs = 0.0
            for start in tqdm(range(0, args.size, 1000), desc="ingest texts", unit="batch"):
                items = [{"content": t, "user_id": "bench"} for t in texts[start : start + 1000]]
                ms, r = timed(client, "POST", "/v1/memories/batch", json={"items": items})
                r.raise_for_status()
                text_secs += ms / 1000
            result["ingest_text_per_s"] = round(args.size / text_secs, 1)

            # short texts: the service's ingest against the raw model on the same texts,
            # batch by batch in turn, so that both see the box in the same state
            short = short_texts(Path(args.data), args.short)
            raw = raw_model(data_dir)
            deferred_secs = 0.0
            service_batches: list[float] = []
            raw_batches: list[float] = []
            graph_catch_up(client, wrote=True)  # the abstracts' graph first
            for start in tqdm(range(0, len(short), 1000), desc="ingest short texts", unit="batch"):
                batch = short[start : start + 1000]
                items = [{"content": t, "user_id": "short"} for t in batch]
                ms, r = timed(client, "POST", "/v1/memories/batch", json={"items": items})
                r.raise_for_status()
                service_batches.append(ms / 1000)
                # the worker starts once the load has been quiet for its quiet time
                deferred_secs += graph_catch_up(client, wrote=True)
                began = time.perf_counter()
                raw.embed([t + " (raw)" for t in batch])
                raw_batches.append(time.perf_counter() - began)
            short_secs, raw_secs = sum(service_batches), sum(raw_batches)
            result["short_batch_seconds"] = [round(t, 3) for t in service_batches]
            result["raw_batch_seconds"] = [round(t, 3) for t in raw_batches]
            pairs = [raw / svc for raw, svc in zip(raw_batches, service_batches, strict=True)]
            result["short_over_raw_per_batch"] = [min(pairs), max(pairs)]
            result["ingest_short_per_s"] = round(len(short) / short_secs, 1)
            result["raw_model_short_per_s"] = round(len(short) / raw_secs, 1)
            result["ingest_short_over_raw"] = round(short_secs and raw_secs / short_secs, 3)
            result["short_graph_catch_up_s"] = round(deferred_secs, 1)

            # ingest: supplied vectors, batches of 1,000 (another scope, other texts)
            rng = np.random.default_rng(0)
            vec_count = min(args.size, args.vector_ingest)
            vectors = rng.standard_normal((vec_count, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            vec_secs = 0.0
            for start in tqdm(range(0, vec_count, 1000), desc="ingest vectors", unit="batch"):
                items = [
                    {
                        "content": f"vector memory {i}",
                        "user_id": "vectors",
                        "embedding": vectors[i].tolist(),
                    }
                    for i in range(start, start + 1000)
                ]
                ms, r = timed(client, "POST", "/v1/memories/batch", json={"items": items})
                r.raise_for_status()
                vec_secs += ms / 1000
            result["ingest_vector_per_s"] = round(vec_count / vec_secs, 1)

            # pgvector's index worker grows its graph once the loads are quiet, on the
            # same two cores: searches timed beside that would time the graph's growth
            result["graph_catch_up_s"] = round(graph_catch_up(client, wrote=True), 1)
            time.sleep(2)
            # search latency, interleaved with /health so both see the same machine state
            health: list[float] = []
            text_ms: list[float] = []
            vector_ms: list[float] = []
            strategies: dict[str, int] = {}
            qvecs = rng.standard_normal((args.queries, 384)).astype(np.float32)
            for _ in range(20):  # warm-up
                timed(client, "GET", "/health")
                timed(
                    client,
                    "POST",
                    "/v1/memories/search",
                    json={"embedding": qvecs[0].tolist(), "k": 10, "user_id": "bench"},
                )
            for i in tqdm(range(args.queries), desc="search", unit="query"):
                health.append(timed(client, "GET", "/health")[0])
                ms, r = timed(
                    client,
                    "POST",
                    "/v1/memories/search",
                    json={
                        "query": queries[i % len(queries)] + f" #{i}",
                        "k": 10,
                        "user_id": "bench",
                    },
                )
                r.raise_for_status()
                text_ms.append(ms)
                ms, r = timed(
                    client,
                    "POST",
                    "/v1/memories/search",
                    json={"embedding": qvecs[i].tolist(), "k": 10, "user_id": "bench"},
                )
                r.raise_for_status()
                vector_ms.append(ms)
                strategy = r.json()["strategy"]
                strategies[strategy] = strategies.get(strategy, 0) + 1
            result.update(
                {
                    "health_p50_ms": round(percentile(health, 50), 3),
                    "text_search_p50_ms": round(percentile(text_ms, 50), 3),
                    "text_search_p95_ms": round(percentile(text_ms, 95), 3),
                    "vector_search_p50_ms": round(percentile(vector_ms, 50), 3),
                    "vector_search_p95_ms": round(percentile(vector_ms, 95), 3),
                    "vector_strategies": strategies,
                    "queries": args.queries,
                }
            )
            result["text_over_health_p50"] = round(
                statistics.median(text_ms) / statistics.median(health), 1
            )
            result["vector_over_health_p50"] = round(
                statistics.median(vector_ms) / statistics.median(health), 1
            )
            result["text_over_vector_p50"] = round(
                statistics.median(text_ms) / statistics.median(vector_ms), 2
            )
    finally:
        stop_service(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def markdown(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            (f"Service over HTTP, {r['memories']:,} memories, {r['machine']} "
            f"({r['queries']} queries each):"),
            "",
            "| measure | value | vs `GET /health` p50 |",
            "|---|---|---|",
            f"| `make run` to `/ready` (venv present) | {r['ready_seconds']} s | |",
            f"| ingest, batches of 1,000 texts | {r['ingest_text_per_s']:,} memories/s | |",
            f"| ingest, batches of 1,000 vectors | {r['ingest_vector_per_s']:,} memories/s | |",
            (f"| ingest, batches of 1,000 short texts | {r['ingest_short_per_s']:,} memories/s "
            f"| {r['ingest_short_over_raw']:.0%} of the raw model "
            f"({r['raw_model_short_per_s']:,}/s, same backend, same texts; batch by batch "
            f"{r['short_over_raw_per_batch'][0]:.0%}-{r['short_over_raw_per_batch'][1]:.0%}); "
            f"pgvector's graph "
            f"then took {r['short_graph_catch_up_s']} s in all, its quiet time included |"),
            f"| `GET /health` p50 | {r['health_p50_ms']} ms | 1.0x |",
            (f"| text-query search p50 / p95 | {r['text_search_p50_ms']} / {r['text_search_p95_ms']} ms"
            f" | {r['text_over_health_p50']}x ({r['text_over_vector_p50']}x vector) |"),
            (f"| vector-query search p50 / p95 | {r['vector_search_p50_ms']} / "
            f"{r['vector_search_p95_ms']} ms | {r['vector_over_health_p50']}x |"),
            "",
            (f"Vector searches were answered by: {r['vector_strategies']}. Embedding backend: "
            f"{r['backend']}. Searches were timed after pgvector's graph caught up with the "
            f"loads ({r['graph_catch_up_s']} s)."),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="memories to load")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--vector-ingest", type=int, default=10_000)
    parser.add_argument("--short", type=int, default=5_000, help="short texts to ingest")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "service_latency.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
