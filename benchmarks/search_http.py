"""Search over real HTTP at scale: every mode and filter beside ``GET /health``, and throughput.

Starts the service from a source tree (this one, or ``--root`` another checkout, so a
baseline runs through the same script) in a fresh data directory, loads ``--size``
memories with supplied vectors in batches of 1,000 over HTTP (SciFact abstracts as
their text, a ``user_id`` of ten values, and metadata keys that select 0.1%, 1%, 10%
and 50% of the rows), waits for the index to settle, then measures, interleaved with
``GET /health`` so that every ratio factors out the machine's state (request bodies
are encoded with msgspec before each clock starts, and the per-tenant rate limit is
lifted, since one tenant sends every request):

- vector-query search unfiltered, with a ``user_id`` scope, with each filter, and with
  ``"consistency": "strong"``; with query text: ``mode: "vector"``, no mode (the default,
  hybrid), keyword and hybrid, every query embedded once before measuring, so the
  text rows compare the searches and not the model; p50 and p99 (``--cases`` picks some);
- for the filters and the scope, how many results came back (exactly k?) and
  recall@10 against an exact scan of the same vectors in numpy (the warm-up searches
  each user once, and measuring waits until the service has built those scopes their
  own graphs);
- searches per second with 16 concurrent clients (unfiltered vector query), driven
  by the light load generator in ``benchmarks/loadgen.py`` (the service's capacity:
  its p50 and p99 under that load too) and again by 16 ``httpx`` clients in one
  process (what one Python agent process can push);
- with ``--variants``, the service restarted on the same data under other settings
  (the event loop and HTTP parser, tracing off or exporting), each measured the same
  way for the unfiltered vector query, so the cost of each piece of the request path
  reads as a ratio within one run;
- beside each part, the service's own per-stage timing (from ``/metrics``).

Writes ``benchmarks/results/search_http_<label>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from tqdm import tqdm

from benchmarks import loadgen, wrk
from benchmarks.common import (
    client_blas_on_one_thread,
    serve_until_ready,
    stage_delta,
    stage_seconds_sync,
    stage_table,
    stop_group,
    wait_for_quiet,
)
from benchmarks.ingest_bench import drain_seconds
from memory_service.config import Settings
from memory_service.infra import db

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ADMIN = "bench-admin"
K = 10
USERS = 10  # the user_id scope of row i is u{i % USERS}
FILTERS = {"0.1%": ("s1000", 1000), "1%": ("s100", 100), "10%": ("s10", 10), "50%": ("s2", 2)}


def vectors(n: int, seed: int) -> np.ndarray:
    """Clustered unit vectors in a 24-dimensional subspace (HNSW finds them as it finds
    real embeddings)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((24, 384)) / np.sqrt(24)
    centres = np.random.default_rng(4321).standard_normal((200, 24))
    z = centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, 24))
    x = z @ basis + 0.05 * rng.standard_normal((n, 384))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def texts(data: Path) -> tuple[list[str], list[str]]:
    corpus = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open()]
    docs = [f"{d.get('title', '')}. {d['text']}"[:600] for d in corpus]
    queries = [json.loads(line)["text"] for line in (data / "scifact" / "queries.jsonl").open()]
    return docs, queries


VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "asyncio + h11": {"MEMORY_HTTP_LOOP": "asyncio", "MEMORY_HTTP_PARSER": "h11"},
    "uvloop + httptools": {"MEMORY_HTTP_LOOP": "uvloop", "MEMORY_HTTP_PARSER": "httptools"},
    "tracing off": {"MEMORY_TRACE_EXPORTER": "off"},
    "tracing to console": {"MEMORY_TRACE_EXPORTER": "console"},
    "search events on": {"MEMORY_RECORD_SEARCH_EVENTS": "true"},
}


def graph_catch_up(data_dir: Path, tenant_id: str) -> float:
    """Seconds until pgvector's index worker has put every loaded row into its graph: the
    catch-up takes both cores for a while, and measuring beside it measures it."""
    url = db.resolve_database_url(Settings(data_dir=str(data_dir)))
    return drain_seconds(url, tenant_id)[0]


def start(
    root: Path, port: int, data_dir: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    module = "cli" if (root / "cli" / "__main__.py").exists() else "memory_service.cli"
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_ADMIN_TOKEN": ADMIN,
        "MEMORY_LOG_LEVEL": "WARNING",
        "MEMORY_DB_POOL_MAX": "24",
        # one tenant drives every request: lift the per-tenant limit (500/s by default)
        "MEMORY_TENANT_REQUESTS_PER_SECOND": "0",
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        **(extra or {}),
    }
    return serve_until_ready(
        [sys.executable, "-m", module, "serve"], root, env, port, data_dir / "service.log", 300
    )


def load(client: httpx.Client, vecs: np.ndarray, docs: list[str]) -> float:
    started = time.perf_counter()
    for s in tqdm(range(0, len(vecs), 1000), desc="load (HTTP, supplied vectors)", unit="batch"):
        items = [
            {
                "content": f"m{i} {docs[i % len(docs)]}",
                "user_id": f"u{i % USERS}",
                "embedding": vecs[i].tolist(),
                "metadata": {key: i % mod for key, mod in FILTERS.values()},
            }
            for i in range(s, min(len(vecs), s + 1000))
        ]
        body = msgspec.json.encode({"items": items})
        r = client.post(
            "/v1/memories/batch", content=body, headers={"Content-Type": "application/json"}
        )
        r.raise_for_status()
    return len(vecs) / (time.perf_counter() - started)


def scope_graphs(client: httpx.Client, count: int, limit: float = 120.0) -> float:
    """Seconds until the service has built the graphs of the ``count`` scopes the warm-up
    searched (a service without scope graphs: none to wait for)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        text = client.get("/metrics").text
        found = re.search(r'^memory_scope_indexes\{index="faiss"\} (\S+)$', text, re.M)
        if found is None or float(found.group(1)) >= count:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def timed(client: httpx.Client, method: str, path: str, **kw: Any) -> tuple[float, Any]:
    if "json" in kw:  # encoded before the clock starts: the service's time, not the client's
        kw["content"] = msgspec.json.encode(kw.pop("json"))
        kw["headers"] = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    r = client.request(method, path, **kw)
    ms = (time.perf_counter() - t0) * 1000.0
    r.raise_for_status()
    return ms, (r.json() if method == "POST" else None)


def cases(queries: np.ndarray, words: list[str]) -> dict[str, Any]:
    """name -> function(i) -> request body."""

    def vec(i: int, **extra: Any) -> dict[str, Any]:
        return {"embedding": queries[i].tolist(), "k": K, **extra}

    out: dict[str, Any] = {
        "vector": lambda i: vec(i),
        "vector user_id": lambda i: vec(i, user_id=f"u{i % USERS}"),
        "vector strong": lambda i: vec(i, consistency="strong"),
    }
    for name, (key, _) in FILTERS.items():
        out[f"vector filter {name}"] = lambda i, key=key: vec(i, filter={f"metadata.{key}": 1})
    # the same query text in each mode; without a mode the service's default (hybrid)
    out["text vector"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "vector"}
    out["text default"] = lambda i: {"query": words[i % len(words)], "k": K}
    out["keyword"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "keyword"}
    out["hybrid"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "hybrid"}
    # text the service has never embedded (a word no memory holds makes each one new): the
    # model's time is part of the answer, as for most real queries
    fresh = itertools.count()
    out["new text vector"] = lambda i: {
        "query": f"{words[i % len(words)]} zq{next(fresh)}", "k": K, "mode": "vector"
    }
    out["new text default"] = lambda i: {"query": f"{words[i % len(words)]} zq{next(fresh)}", "k": K}
    return out


def embed_every_query(client: httpx.Client, words: list[str], n: int) -> None:
    """Send each query text once before measuring: the service keeps query embeddings in
    a cache, so whichever mode came first in a round would otherwise pay the model for
    all the others. The text rows then compare the searches alone (the model's cost is
    ``benchmarks/embedding_bench.py``'s)."""
    for i in range(n):
        body = {"query": words[i % len(words)], "k": 1, "mode": "vector"}
        timed(client, "POST", "/v1/memories/search", json=body)


def truth(vecs: np.ndarray, q: np.ndarray, mod: int, residue: int = 1) -> list[int]:
    allowed = np.flatnonzero(np.arange(len(vecs)) % mod == residue)
    return allowed[np.argsort(-(vecs[allowed] @ q))[:K]].tolist()


def measure(client: httpx.Client, vecs: np.ndarray, qs: np.ndarray, bodies: dict) -> dict:
    with client_blas_on_one_thread():  # the ground truth below scores up to 100k vectors
        return _measure(client, vecs, qs, bodies)


def _measure(client: httpx.Client, vecs: np.ndarray, qs: np.ndarray, bodies: dict) -> dict:
    health: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in bodies}
    strategies: dict[str, set[str]] = {name: set() for name in bodies}
    quality: dict[str, list[tuple[bool, float]]] = {name: [] for name in bodies}
    for i in tqdm(range(len(qs)), desc="search (interleaved with /health)", unit="round"):
        health.append(timed(client, "GET", "/health")[0])
        for name, body in bodies.items():
            ms, answer = timed(client, "POST", "/v1/memories/search", json=body(i))
            times[name].append(ms)
            strategies[name].add(answer["strategy"])
            if name.startswith("vector filter") or name in ("vector user_id", "vector"):
                if name == "vector":
                    mod, residue = 1, 0
                elif name == "vector user_id":
                    mod, residue = USERS, i % USERS
                else:
                    mod, residue = FILTERS[name.removeprefix("vector filter ")][1], 1
                got = [int(h["memory"]["content"].split()[0][1:]) for h in answer["results"]]
                want = truth(vecs, qs[i], mod, residue)
                short = len(got) < len(want)  # fewer than k only when fewer than k match
                quality[name].append((short, len(set(got) & set(want)) / len(want)))
    h50 = float(np.percentile(health, 50))
    out: dict[str, Any] = {"health_p50_ms": round(h50, 3)}
    for name, values in times.items():
        p50, p99 = float(np.percentile(values, 50)), float(np.percentile(values, 99))
        row = {
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "p50_over_health": round(p50 / h50, 2),
            "p99_over_health_p50": round(p99 / h50, 2),
            "strategies": sorted(strategies[name]),
        }
        if quality[name]:
            row["exactly_k"] = not any(short for short, _ in quality[name])
            row["recall_at_10"] = round(float(np.mean([r for _, r in quality[name]])), 4)
        out[name] = row
    return out


async def throughput_httpx(
    base: str, headers: dict[str, str], qs: np.ndarray, seconds: float
) -> float:
    """16 concurrent requests through one ``httpx.AsyncClient``, as a Python agent would send them."""
    done = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < deadline:
            body = {"embedding": qs[i % len(qs)].tolist(), "k": K}
            r = await client.post("/v1/memories/search", json=body)
            r.raise_for_status()
            done += 1
            i += 16

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(w, client) for w in range(16)))
        return done / (time.perf_counter() - started)


def throughput(
    port: int, headers: dict[str, str], qs: np.ndarray, seconds: float
) -> dict[str, Any]:
    """Searches/s with 16 clients: the light load generator (the service's capacity) and httpx."""
    auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
    requests = [
        loadgen.post("/v1/memories/search", {"embedding": q.tolist(), "k": K}, auth) for q in qs
    ]
    raw = asyncio.run(loadgen.hammer("127.0.0.1", port, requests, clients=16, seconds=seconds))
    if raw.errors:
        raise RuntimeError(f"{raw.errors} searches failed under load")
    health = [loadgen.get("/health")]
    floor = asyncio.run(loadgen.hammer("127.0.0.1", port, health, clients=16, seconds=seconds))
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"health_per_s_16_clients": round(floor.per_s, 1)}
    if wrk.available():  # the C generator, same connections: the rates of the service alone
        bodies = [{"embedding": q.tolist(), "k": K} for q in qs[:50]]
        searched = wrk.run_wrk(
            port, "/v1/memories/search", bodies=bodies, headers=auth, seconds=seconds
        )
        if searched["non_2xx"]:
            raise RuntimeError(f"{searched['non_2xx']:.0f} searches failed under wrk")
        checked = wrk.run_wrk(port, "/health", seconds=seconds)
        out["wrk"] = {
            "search": searched,
            "health": checked,
            "search_over_health": round(searched["per_s"] / checked["per_s"], 3),
        }
    return out | {
        "qps_16_clients": round(raw.per_s, 1),
        "p50_ms_16_clients": round(raw.percentile(50), 2),
        "p99_ms_16_clients": round(raw.percentile(99), 2),
        "qps_16_clients_httpx": round(asyncio.run(throughput_httpx(base, headers, qs, seconds)), 1),
    }


def variant(
    args: argparse.Namespace, data_dir: Path, headers: dict[str, str], qs: np.ndarray, env: dict
) -> dict[str, Any]:
    """The service restarted on the same data with ``env``: health, vector query, 16 clients."""
    proc = start(Path(args.root).resolve(), args.port, data_dir, env)
    try:
        base = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=base, timeout=600, headers=headers) as client:
            bodies = {"vector": lambda i: {"embedding": qs[i].tolist(), "k": K}}
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # until the index is loaded and answers
                if (
                    timed(client, "POST", "/v1/memories/search", json=bodies["vector"](0))[1][
                        "strategy"
                    ]
                    == "faiss"
                ):
                    break
                time.sleep(0.5)
            for i in range(20):
                timed(client, "POST", "/v1/memories/search", json=bodies["vector"](i))
            out = measure(client, np.zeros((0, 384)), qs, bodies)
        out.update(throughput(args.port, headers, qs, args.seconds))
        return out
    finally:
        stop_group(proc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    docs, words = texts(Path(args.data))
    vecs = vectors(args.size, seed=1)
    qs = vectors(args.queries, seed=2)
    data_dir = Path(tempfile.mkdtemp(prefix="search-http-"))
    proc = start(Path(args.root).resolve(), args.port, data_dir)
    report: dict[str, Any] = {
        "label": args.label,
        "memories": args.size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    try:
        base = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=base, timeout=600) as client:
            r = client.post(
                "/v1/admin/tenants",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            client.headers["Authorization"] = f"Bearer {r.json()['api_key']}"
            report["load_per_s"] = round(load(client, vecs, docs), 1)
            report["graph_catch_up_s"] = round(graph_catch_up(data_dir, r.json()["id"]), 1)
            time.sleep(args.settle)  # the index grows into HNSW in the background
            bodies = cases(qs, words)
            if args.cases:
                bodies = {name: bodies[name] for name in args.cases.split(",")}
            # a service that refuses a case (an older one without the option) skips it
            report["unsupported"] = [
                name
                for name, body in bodies.items()
                if client.post("/v1/memories/search", json=body(0)).status_code in (400, 422)
            ]
            for name in report["unsupported"]:
                del bodies[name]
            for i in range(20):  # warm-up: every case
                for body in bodies.values():
                    timed(client, "POST", "/v1/memories/search", json=body(i))
            report["scope_graphs_s"] = round(scope_graphs(client, USERS), 1)
            embed_every_query(client, words, len(qs))
            before = stage_seconds_sync(client)
            report["latency"] = measure(client, vecs, qs, bodies)
            report["latency_stages"] = stage_delta(before, stage_seconds_sync(client))
            headers = dict(client.headers)
            before = stage_seconds_sync(client)
        report.update(throughput(args.port, headers, qs, args.seconds))
        with httpx.Client(base_url=base, timeout=60) as client:
            report["throughput_stages"] = stage_delta(before, stage_seconds_sync(client))
        report["load_average"] = list(os.getloadavg())
        if args.variants:
            stop_group(proc)
            report["variants"] = {
                name: variant(args, data_dir, headers, qs, VARIANTS[name])
                for name in args.variants.split(",")
            }
    finally:
        stop_group(proc)
        db.stop_embedded(Settings(data_dir=str(data_dir)))
        shutil.rmtree(data_dir, ignore_errors=True)
    return report


STAGE_ROUTES = ("POST /v1/memories/search", "GET /health")


def _wrk_lines(w: dict[str, Any] | None) -> list[str]:
    if not w:
        return []
    s, h = w["search"], w["health"]
    return [
        (
            f"`wrk`, 16 connections: {s['per_s']:,.0f} searches/s (p50 {s.get('p50_ms')} ms, "
            f"p99 {s.get('p99_ms')} ms) against {h['per_s']:,.0f} `GET /health`/s "
            f"(p50 {h.get('p50_ms')} ms): searches/s = **{w['search_over_health']}** of "
            "`/health`/s."
        ),
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    lat = r["latency"]
    lines = [
        (
            f"Search over HTTP, {r['label']}: {r['memories']:,} memories, {r['machine']}; "
            f"pgvector's graph caught up {r.get('graph_catch_up_s', '?')} s after the load; "
            f"`GET /health` p50 {lat['health_p50_ms']} ms; "
            f"16 clients: {r['qps_16_clients']} searches/s (p50 {r.get('p50_ms_16_clients')} ms, "
            f"p99 {r.get('p99_ms_16_clients')} ms; through httpx {r.get('qps_16_clients_httpx')}/s), "
            f"`GET /health` {r.get('health_per_s_16_clients')}/s from the same generator."
        ),
        "",
        *_wrk_lines(r.get("wrk")),
        "| search | p50 ms | p99 ms | p50 / health p50 | p99 / health p50 | exactly k | recall@10 | answered by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in lat.items():
        if not isinstance(row, dict):
            continue
        lines.append(
            f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['p50_over_health']}x | "
            f"{row['p99_over_health_p50']}x | {row.get('exactly_k', '')} | "
            f"{row.get('recall_at_10', '')} | {', '.join(row['strategies'])} |"
        )
    if "text default" in lat and "text vector" in lat:
        lines += [
            "",
            (
                "The same query text without a mode (the default, hybrid) against `mode: "
                f"\"vector\"`: p50 {lat['text default']['p50_ms'] / lat['text vector']['p50_ms']:.2f}x, "
                f"p99 {lat['text default']['p99_ms'] / lat['text vector']['p99_ms']:.2f}x "
                "(query embeddings cached for both)."
            ),
        ]
    if r.get("latency_stages"):
        lines += [
            "",
            (
                f"Where the time went, as the service measured it (mean ms per request; load "
                f"average {[round(x, 2) for x in r['load_average']]}), one client, every case:"
            ),
            "",
            *stage_table(r["latency_stages"], STAGE_ROUTES),
            "",
            "16 clients (both load generators):",
            "",
            *stage_table(r["throughput_stages"], STAGE_ROUTES),
        ]
    if r.get("variants"):
        lines += [
            "",
            "The service restarted on the same data under other settings (unfiltered vector query):",
            "",
            (
                "| settings | health p50 ms | vector p50 ms | p99 ms | p50 / health p50 "
                "| 16 clients/s | through httpx/s |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in r["variants"].items():
            lines.append(
                f"| {name} | {v['health_p50_ms']} | {v['vector']['p50_ms']} | "
                f"{v['vector']['p99_ms']} | {v['vector']['p50_over_health']}x | "
                f"{v['qps_16_clients']} | {v.get('qps_16_clients_httpx', '')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT), help="source tree of the service to run")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after loading")
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput run length")
    parser.add_argument("--port", type=int, default=18181)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet box")
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated settings to rerun the vector query under: {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--cases", default="", help="comma-separated searches to measure (default: all of them)"
    )
    args = parser.parse_args()
    known = cases(np.zeros((1, 384)), ["x"])
    missing = [c for c in args.cases.split(",") if c and c not in known]
    if missing:
        parser.error(f"unknown cases {missing}; known: {', '.join(known)}")
    unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    quiet = None if args.no_wait else round(wait_for_quiet(), 2)
    report = run(args) | {"load_before": quiet}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "search_http_" + "".join(c if c.isalnum() else "_" for c in args.label)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
