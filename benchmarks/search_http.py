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
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from benchmarks import loadgen, wrk
from benchmarks.common import (
    client_blas_on_one_thread,
    stage_delta,
    stage_seconds_sync,
    stop_group,
    wait_for_quiet,
)
from benchmarks.search_http_report import markdown
from benchmarks.search_setup import (
    ADMIN,
    FILTERS,
    RESULTS,
    ROOT,
    USERS,
    K,
    cases,
    embed_every_query,
    graph_catch_up,
    load,
    scope_graphs,
    start,
    texts,
    timed,
    truth,
    vectors,
)
from memory_service.config import Settings
from memory_service.infra import db

VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "asyncio + h11": {"MEMORY_HTTP_LOOP": "asyncio", "MEMORY_HTTP_PARSER": "h11"},
    "uvloop + httptools": {"MEMORY_HTTP_LOOP": "uvloop", "MEMORY_HTTP_PARSER": "httptools"},
    "tracing off": {"MEMORY_TRACE_EXPORTER": "off"},
    "tracing to console": {"MEMORY_TRACE_EXPORTER": "console"},
    "search events on": {"MEMORY_RECORD_SEARCH_EVENTS": "true"},
}


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
            if r.status_code != 429:  # a refusal under load is counted apart, by the others
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
    # a search answered other than 200 (a 429 when the tenant's share is full and its
    # queue waited too long) is counted, not served: the rates are of answered searches
    raw = asyncio.run(loadgen.hammer("127.0.0.1", port, requests, clients=16, seconds=seconds))
    health = [loadgen.get("/health")]
    floor = asyncio.run(loadgen.hammer("127.0.0.1", port, health, clients=16, seconds=seconds))
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"health_per_s_16_clients": round(floor.per_s, 1)}
    if wrk.available():  # the C generator, same connections: the rates of the service alone
        bodies = [{"embedding": q.tolist(), "k": K} for q in qs[:50]]
        searched = wrk.run_wrk(
            port, "/v1/memories/search", bodies=bodies, headers=auth, seconds=seconds
        )
        checked = wrk.run_wrk(port, "/health", seconds=seconds)
        out["wrk"] = {
            "search": searched,
            "health": checked,
            "search_over_health": round(searched["served_per_s"] / checked["per_s"], 3),
        }
    return out | {
        "refused_16_clients": raw.errors,
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
