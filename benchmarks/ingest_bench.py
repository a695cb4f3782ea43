"""Supplied-vector ingest over HTTP: pgvector's graph kept inline versus deferred.

One embedded PostgreSQL, service processes in turn (the same code; FAISS off
so pgvector answers every search, or with ``--faiss`` on as the service runs by
default): ``MEMORY_PGVECTOR_INDEX_MODE=inline`` (every
batch row walks the HNSW graph, as shipped before) and ``deferred`` (rows wait
for the index worker). Each loads N memories with their own embeddings in
1,000-row ``POST /v1/memories/batch`` requests; every few batches it searches
and checks the answer against an exact numpy ranking of what is loaded so far
(recall@10, and whether exactly k came back). After the deferred load it times
how long the worker takes to drain the backlog. Request bodies are encoded with
msgspec before each request's clock starts, so the rate is the service's, not the
client's JSON encoder's. Results go to ``benchmarks/results/<--out>.{json,md}``
(``ingest`` by default).

    python -m benchmarks.ingest_bench --size 20k
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import psycopg
from tqdm import tqdm

from benchmarks.common import (
    ADMIN_TOKEN,
    ServiceProcess,
    client_blas_on_one_thread,
    machine,
    parse_size,
    synthetic_vectors,
)
from memory_service.config import Settings
from memory_service.infra import db

BATCH = 1000
JSON = {"Content-Type": "application/json"}
K = 10
RESULTS = Path(__file__).parent / "results"
RUN_NAMES = {
    "inline": "inline, batch posts (as before)",
    "deferred": "deferred, batch posts",
    "deferred+import": "deferred, one NDJSON import",
}


def new_tenant(base_url: str) -> tuple[str, dict[str, str]]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(
        f"{base_url}/v1/admin/tenants", json={"name": "ingest"}, headers=admin, timeout=60
    )
    r.raise_for_status()
    return r.json()["id"], {"Authorization": f"Bearer {r.json()['api_key']}"}


def check_search(
    client: httpx.Client, vecs: np.ndarray, loaded: int, q: np.ndarray
) -> tuple[float, bool]:
    """(recall@10 against the exact ranking of the loaded rows, exactly k came back)."""
    r = client.post("/v1/memories/search", json={"embedding": q.tolist(), "k": K})
    r.raise_for_status()
    got = [int(hit["memory"]["content"].split()[-1]) for hit in r.json()["results"]]
    truth = set(np.argsort(-(vecs[:loaded] @ q))[:K].tolist())
    return len(truth & set(got)) / K, len(got) == K


def load(
    svc: ServiceProcess, headers: dict[str, str], vecs: np.ndarray, queries: np.ndarray, label: str
) -> dict[str, Any]:
    recalls: list[float] = []
    exactly_k = True
    spent = 0.0
    with httpx.Client(base_url=svc.base_url, headers=headers, timeout=600) as client:
        for n, start in enumerate(tqdm(range(0, len(vecs), BATCH), desc=label, unit="batch")):
            items = [
                {"content": f"memory number {i}", "embedding": vecs[i].tolist()}
                for i in range(start, min(start + BATCH, len(vecs)))
            ]
            # encoded before the clock starts, with a fast encoder: the service's time, not
            # the standard library's (json.dumps of 384,000 floats takes about 0.5 s here)
            body = msgspec.json.encode({"items": items})
            began = time.perf_counter()
            r = client.post("/v1/memories/batch", content=body, headers=JSON)
            spent += time.perf_counter() - began
            r.raise_for_status()
            if n % 4 == 3:
                for q in queries[n % len(queries) :][:3]:
                    recall, full = check_search(client, vecs, start + len(items), q)
                    recalls.append(recall)
                    exactly_k &= full
    return {
        "ingest_per_s": len(vecs) / spent,
        "searches_during_load": len(recalls),
        "recall_at_10_during_load": float(np.mean(recalls)) if recalls else None,
        "exactly_k_during_load": exactly_k,
    }


def ndjson(vecs: np.ndarray) -> Iterator[bytes]:
    for start in range(0, len(vecs), BATCH):
        yield b"".join(
            msgspec.json.encode({"content": f"memory number {i}", "embedding": vecs[i].tolist()})
            + b"\n"
            for i in range(start, min(start + BATCH, len(vecs)))
        )


def import_all(svc: ServiceProcess, headers: dict[str, str], vecs: np.ndarray) -> dict[str, Any]:
    """One streamed ``POST /v1/memories/import`` of every row (no searches meanwhile)."""
    with httpx.Client(base_url=svc.base_url, headers=headers, timeout=3600) as client:
        began = time.perf_counter()
        r = client.post(
            "/v1/memories/import",
            content=ndjson(vecs),
            headers={"Content-Type": "application/x-ndjson"},
        )
        spent = time.perf_counter() - began
    r.raise_for_status()
    assert r.json()["created"] == len(vecs), r.text
    return {"ingest_per_s": len(vecs) / spent, "searches_during_load": 0}


def drain_seconds(url: str, tid: str, limit_s: float = 3600) -> tuple[float, int]:
    """How long until the tenant has no row waiting for the graph; and the backlog at start."""
    started = time.perf_counter()
    first = -1
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - started < limit_s:
            row = conn.execute(
                "SELECT count(*) FROM memories WHERE tenant_id = %s AND NOT indexed", (tid,)
            ).fetchone()
            waiting = int(row[0]) if row else 0
            first = waiting if first < 0 else first
            if waiting == 0:
                break
            time.sleep(0.5)
    return time.perf_counter() - started, first


def run_mode(
    url: str, data_dir: Path, run: str, vecs: np.ndarray, queries: np.ndarray, *, faiss: bool
) -> dict[str, Any]:
    """``run`` is ``<index mode>`` (batch posts) or ``<index mode>+import`` (one NDJSON import)."""
    mode, _, via = run.partition("+")
    svc = ServiceProcess(url, data_dir, data_dir / f"{mode}.log")
    svc.env.update({"MEMORY_PGVECTOR_INDEX_MODE": mode, "MEMORY_FAISS_ENABLED": str(faiss).lower()})
    svc.start()
    try:
        tid, headers = new_tenant(svc.base_url)
        if via == "import":
            out = import_all(svc, headers, vecs)
        else:
            out = load(svc, headers, vecs, queries, run)
        out["drain_s"], out["backlog_after_load"] = drain_seconds(url, tid)
        with httpx.Client(base_url=svc.base_url, headers=headers, timeout=600) as client:
            after = [check_search(client, vecs, len(vecs), q) for q in queries[:10]]
        out["recall_at_10_after_drain"] = float(np.mean([a[0] for a in after]))
        out["exactly_k_after_drain"] = all(a[1] for a in after)
    finally:
        svc.stop()
    return out


def markdown(result: dict[str, Any]) -> str:
    first = next(iter(result["modes"].values()))
    title = (
        f"Supplied-vector ingest over HTTP, {result['size']:,} memories in 1,000-row batches, "
        "bodies encoded with msgspec before each request's clock starts, "
        + ("FAISS on (the default; it answers searches)" if result.get("faiss") else "FAISS off (pgvector answers)")
        + ", one run on a shared 2-core box"
    )
    header = (
        "| pgvector index | memories/s | vs the first row | recall@10 during load (exactly k) "
        "| backlog after load | drain | recall@10 after |"
    )
    lines = [title, "", header, "|---|---:|---:|---|---:|---:|---:|"]
    for name, m in result["modes"].items():
        during = (
            f"{m['recall_at_10_during_load']:.3f} ({m['exactly_k_during_load']})"
            if m["searches_during_load"]
            else "not measured"
        )
        lines.append(
            f"| {RUN_NAMES.get(name, name)} | {m['ingest_per_s']:,.0f} "
            f"| {m['ingest_per_s'] / first['ingest_per_s']:.2f}x | {during} "
            f"| {m['backlog_after_load']:,} | {m['drain_s']:.1f} s "
            f"| {m['recall_at_10_after_drain']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100k", help="memories per mode (e.g. 20k, 100k)")
    parser.add_argument("--modes", default="inline,deferred,deferred+import")
    parser.add_argument(
        "--faiss", action="store_true", help="keep FAISS on, as the service runs by default"
    )
    parser.add_argument("--out", default="ingest", help="results file name (no suffix)")
    args = parser.parse_args()
    client_blas_on_one_thread()  # the recall checks score up to every loaded vector
    n = parse_size(args.size)
    vecs = synthetic_vectors(n, seed=11)
    queries = synthetic_vectors(50, seed=12)
    data_dir = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    data_dir.chmod(0o755)
    settings = Settings(data_dir=str(data_dir))
    url = db.resolve_database_url(settings)
    try:
        modes = {
            m: run_mode(url, data_dir, m, vecs, queries, faiss=args.faiss)
            for m in args.modes.split(",")
        }
    finally:
        db.stop_embedded(settings)
    result = {"size": n, "batch": BATCH, "faiss": args.faiss, "machine": machine(), "modes": modes}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
