"""Search latency while the service catches up after a bulk load, against settled latency.

A bulk load leaves work behind: pgvector's index worker puts the batch-written rows
into its graph (in the database), FAISS grows or compacts the tenant's graph, and the
first search of a large scope has the tenant build that scope a graph of its own. This
benchmark measures what that background work costs the requests that arrive meanwhile:

1. waits until the machine's load average is under 1.5 (``--no-wait`` skips it), starts
   the service from a source tree (this one, or ``--root`` another checkout, so a
   baseline runs through the same script) in a fresh data directory;
2. bulk-loads ``--n`` memories with supplied vectors over HTTP in batches of 1,000, all
   in one namespace, half under ``user_id`` u0 and half under u1;
3. at once, ``--clients`` concurrent clients search every scope in turn (unscoped, the
   namespace, one user), while another asks ``GET /health`` ten times a second (the
   floor: what a request costs that does no search) and a monitor reads ``/metrics``
   (``memory_index_backlog`` of every index, ``memory_scope_indexes``) once a second;
4. reports client p50/p95 per ``--window`` seconds until no index reports a backlog and
   the scope graphs are built (or ``--max-catchup`` passes), then measures the settled
   latency for ``--settle`` seconds with the same clients.

The headline is each window's p50 over the settled p50 (target: at most 2 in every
window). Writes ``benchmarks/results/catchup.json`` (one entry per ``--label``, kept
across runs) and ``catchup.md``. Run: ``python -m benchmarks.catchup_bench --n 30000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from tqdm import tqdm

from benchmarks import loadgen
from benchmarks.common import (
    free_port,
    load_text,
    serve_until_ready,
    stop_group,
    synthetic_vectors,
    wait_for_quiet,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ADMIN = "bench-admin"
K = 10
NAMESPACE = "bench"
CASES = ("unscoped", "namespace", "user_id")
SEARCH = "/v1/memories/search"
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# before scope graphs report a backlog of their own, these many are built once caught up
SCOPE_GRAPHS = 3  # the namespace, u0 and u1
_METRIC = re.compile(r'^(memory_index_backlog|memory_scope_indexes)\{index="(\w+)"\} (\S+)$', re.M)


def start(root: Path, port: int, data_dir: Path) -> Any:
    module = "cli" if (root / "cli" / "__main__.py").exists() else "memory_service.cli"
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_ADMIN_TOKEN": ADMIN,
        "MEMORY_LOG_LEVEL": "WARNING",
        "MEMORY_EMBEDDING_MODEL": "hash:384",  # every request carries its vector
        # one tenant drives every request: lift the per-tenant rate and in-flight share
        "MEMORY_TENANT_REQUESTS_PER_SECOND": "0",
        "MEMORY_TENANT_MAX_IN_FLIGHT": "0",
        "MEMORY_FAISS_SNAPSHOT_INTERVAL_S": "3600",
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
    }
    return serve_until_ready(
        [sys.executable, "-m", module, "serve"], root, env, port, data_dir / "service.log", 300
    )


def load(client: httpx.Client, vecs: np.ndarray) -> float:
    started = time.perf_counter()
    for s in tqdm(range(0, len(vecs), 1000), desc="bulk load (supplied vectors)", unit="batch"):
        items = [
            {
                "content": f"m{i}",
                "namespace": NAMESPACE,
                "user_id": f"u{i % 2}",
                "embedding": vecs[i].tolist(),
            }
            for i in range(s, min(len(vecs), s + 1000))
        ]
        r = client.post(
            "/v1/memories/batch",
            content=msgspec.json.encode({"items": items}),
            headers={"Content-Type": "application/json"},
        )
        r.raise_for_status()
    return time.perf_counter() - started


def requests(queries: np.ndarray, headers: dict[str, str]) -> dict[str, list[bytes]]:
    """case -> HTTP requests, encoded before any clock starts."""
    out: dict[str, list[bytes]] = {case: [] for case in CASES}
    for i, q in enumerate(queries):
        base = {"embedding": q.tolist(), "k": K}
        scoped = {"namespace": {"namespace": NAMESPACE}, "user_id": {"user_id": f"u{i % 2}"}}
        out["unscoped"].append(loadgen.post(SEARCH, base, headers))
        for case, scope in scoped.items():
            out[case].append(loadgen.post(SEARCH, {**base, **scope}, headers))
    return out


@dataclass
class Recorder:
    """Samples (monotonic end time, case, ms) from the clients; index readings."""

    samples: list[tuple[float, str, float]] = field(default_factory=list)
    indexes: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


async def drive(port: int, prepared: dict[str, list[bytes]], clients: int, rec: Recorder) -> None:
    """``clients`` keep-alive connections, each sending its next search (every scope in
    turn) as soon as the last is answered, and one asking ``/health`` ten times a second
    (the light client of ``loadgen``: a Python HTTP client would measure itself)."""

    async def searcher(w: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = w
        try:
            while not rec.stop.is_set():
                case = CASES[i % len(CASES)]
                began = time.perf_counter()
                writer.write(prepared[case][(i // len(CASES)) % len(prepared[case])])
                status = await loadgen.read_response(reader)
                ms = (time.perf_counter() - began) * 1000.0
                if status == 200:
                    rec.samples.append((time.monotonic(), case, ms))
                else:
                    rec.errors += 1
                i += 1
        finally:
            writer.close()

    async def health() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not rec.stop.is_set():
                began = time.perf_counter()
                writer.write(HEALTH)
                await loadgen.read_response(reader)
                rec.samples.append(
                    (time.monotonic(), "health", (time.perf_counter() - began) * 1000.0)
                )
                await asyncio.sleep(0.1)
        finally:
            writer.close()

    await asyncio.gather(health(), *(searcher(w) for w in range(clients)))


def read_indexes(client: httpx.Client) -> dict[str, float]:
    """``backlog:<index>`` and ``scopes:<index>`` from ``/metrics``."""
    text = client.get("/metrics").text
    out: dict[str, float] = {}
    for metric, index, value in _METRIC.findall(text):
        kind = "backlog" if metric == "memory_index_backlog" else "scopes"
        out[f"{kind}:{index}"] = float(value)
    return out


def caught_up(state: dict[str, float]) -> bool:
    """No index reports a backlog, and (where FAISS reports none of its own) the scope
    graphs the searches ask for are built."""
    if any(v > 0 for k, v in state.items() if k.startswith("backlog:")):
        return False
    if "backlog:faiss" not in state:
        return state.get("scopes:faiss", 0) >= SCOPE_GRAPHS
    return True


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
    }


def summarise(rec: Recorder, t0: float, settled_at: float, end: float, window: float) -> dict:
    def between(lo: float, hi: float) -> dict[str, list[float]]:
        got: dict[str, list[float]] = {case: [] for case in (*CASES, "health", "search")}
        for at, case, ms in rec.samples:
            if lo <= at < hi:
                got[case].append(ms)
                if case != "health":
                    got["search"].append(ms)
        return got

    settled = between(settled_at, end)
    base = stats(settled["search"])
    out: dict[str, Any] = {
        "settled": {case: stats(v) for case, v in settled.items()},
        "windows": [],
    }
    lo = t0
    while lo < settled_at:
        hi = min(lo + window, settled_at)
        got = between(lo, hi)
        row = {"from_s": round(lo - t0, 1), "to_s": round(hi - t0, 1)}
        row.update({case: stats(v) for case, v in got.items()})
        if got["search"] and base.get("p50_ms"):
            row["ratio_p50"] = round(row["search"]["p50_ms"] / base["p50_ms"], 2)
        if got["search"] and got["health"]:  # the machine's state in the same window
            row["over_health"] = round(row["search"]["p50_ms"] / row["health"]["p50_ms"], 2)
        readings = [s for at, s in rec.indexes if lo <= at < hi]
        row["indexes_at_end"] = readings[-1] if readings else {}
        out["windows"].append(row)
        lo = hi
    ratios = [w["ratio_p50"] for w in out["windows"] if "ratio_p50" in w]
    out["worst_window_ratio_p50"] = max(ratios) if ratios else None
    over = [w["over_health"] for w in out["windows"] if "over_health" in w]
    out["worst_window_over_health"] = max(over) if over else None
    if settled["search"] and settled["health"]:
        out["settled_over_health"] = round(
            float(np.percentile(settled["search"], 50) / np.percentile(settled["health"], 50)), 2
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    vecs = synthetic_vectors(args.n, seed=1)
    queries = synthetic_vectors(200, seed=2)
    data_dir = Path(tempfile.mkdtemp(prefix="catchup-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(Path(args.root).resolve(), port, data_dir)
    report: dict[str, Any] = {
        "label": args.label,
        "n": args.n,
        "clients": args.clients,
        "root": str(Path(args.root).resolve()),
        "cpus": os.cpu_count(),
    }
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            r = client.post(
                "/v1/admin/tenants",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            r.raise_for_status()
            headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
            client.headers.update(headers)
            report["load_average_before_load"] = load_text()
            report["load_s"] = round(load(client, vecs), 1)
            prepared = requests(queries, headers)
            rec = Recorder()
            driver = threading.Thread(
                target=lambda: asyncio.run(drive(port, prepared, args.clients, rec))
            )
            t0 = time.monotonic()
            driver.start()
            settled_at = None
            with tqdm(desc="catching up (s)", unit="s") as bar:
                while time.monotonic() - t0 < args.max_catchup:
                    state = read_indexes(client)
                    rec.indexes.append((time.monotonic(), state))
                    bar.set_postfix(state, refresh=False)
                    bar.update(1)
                    if caught_up(state):
                        settled_at = time.monotonic()
                        break
                    time.sleep(1.0)
            report["caught_up"] = settled_at is not None
            settled_at = settled_at or time.monotonic()
            report["catch_up_s"] = round(settled_at - t0, 1)
            report["load_average_at_catch_up"] = load_text()
            for _ in tqdm(range(int(args.settle)), desc="settled", unit="s"):
                time.sleep(1.0)
            end = time.monotonic()
            rec.stop.set()
            driver.join()
            report["errors"] = rec.errors
            report.update(summarise(rec, t0, settled_at, end, args.window))
            report["load_average_after"] = load_text()
    finally:
        stop_group(proc)  # the service stops its embedded PostgreSQL as it exits
        shutil.rmtree(data_dir, ignore_errors=True)  # a 100,000-row run leaves 2 GB
    return report


def markdown(runs: dict[str, Any]) -> str:
    lines = [
        "# Search latency while the service catches up after a bulk load",
        "",
        "Produced by `python -m benchmarks.catchup_bench`; see its docstring. Client p50/p95",
        "in ms of searches over every scope (unscoped, namespace, user_id) from concurrent",
        "clients, per window after the load, against the settled p50 once no index",
        "reports a backlog. `/health` is the floor.",
        "",
    ]
    for label, r in runs.items():
        settled = r["settled"]
        lines += [
            f"## {label}: {r['n']} vectors, {r['clients']} clients",
            "",
            (
                f"- load {r['load_s']} s; caught up: {r['caught_up']} after {r['catch_up_s']} s; "
                f"errors {r['errors']}"
            ),
            (
                f"- load average: before load {r['load_average_before_load']}, at catch-up "
                f"{r['load_average_at_catch_up']}, after {r['load_average_after']}"
            ),
            (
                f"- settled p50 {settled['search'].get('p50_ms')} ms (unscoped "
                f"{settled['unscoped'].get('p50_ms')}, namespace {settled['namespace'].get('p50_ms')}, "
                f"user_id {settled['user_id'].get('p50_ms')}); /health p50 "
                f"{settled['health'].get('p50_ms')} ms"
            ),
            f"- worst window p50 / settled p50: **{r['worst_window_ratio_p50']}**",
            (
                f"- search p50 / /health p50 of the same window (factors out the machine's state): "
                f"worst window {r.get('worst_window_over_health')}, settled {r.get('settled_over_health')}"
            ),
            "",
            (
                "| window s | p50 | p95 | ratio | unscoped p50 | namespace p50 | user_id p50 "
                "| /health p50 | p50 / health | backlog at end |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in r["windows"]:
            idx = ", ".join(f"{k}={v:g}" for k, v in w["indexes_at_end"].items())
            lines.append(
                f"| {w['from_s']}-{w['to_s']} | {w['search'].get('p50_ms')} | "
                f"{w['search'].get('p95_ms')} | {w.get('ratio_p50')} | "
                f"{w['unscoped'].get('p50_ms')} | {w['namespace'].get('p50_ms')} | "
                f"{w['user_id'].get('p50_ms')} | {w['health'].get('p50_ms')} | "
                f"{w.get('over_health')} | {idx} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="memories to bulk-load")
    parser.add_argument("--clients", type=int, default=3, help="concurrent search clients")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per reported window")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of settled latency")
    parser.add_argument("--max-catchup", type=float, default=900.0, help="give up after this")
    parser.add_argument("--root", default=str(ROOT), help="the source tree to run the service from")
    parser.add_argument("--label", default="current", help="the name of this run in the results")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument(
        "--wait-timeout", type=float, default=300.0, help="wait at most this long for load < 1.5"
    )
    args = parser.parse_args()
    if not args.no_wait:
        wait_for_quiet(1.5, args.wait_timeout)
    print(f"load average at start: {load_text()}", flush=True)
    report = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "catchup.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[args.label] = report
    path.write_text(json.dumps(runs, indent=2) + "\n")
    (RESULTS / "catchup.md").write_text(markdown(runs))
    print(markdown({args.label: report}))


if __name__ == "__main__":
    main()
