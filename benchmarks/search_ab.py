"""Two source trees' services side by side over HTTP, their requests interleaved.

``python -m benchmarks.search_ab --baseline ../other-checkout --size 10000`` starts the
service of ``--baseline`` and of this tree (``--root``), each in a fresh data directory
with the same ``--size`` memories loaded through HTTP as ``search_http`` loads them
(SciFact abstracts, supplied vectors), embeds every query text once in each, and then
sends each round's searches to both in turn: ``GET /health``, and each case of
``--cases`` (``search_http``'s names). On a shared machine whose load swings from one
minute to the next, two runs of ``search_http`` measure two machines; here both trees
answer the same round within milliseconds of each other, so their ratios (the default
mode over vector mode, say) compare like with like. Writes
``benchmarks/results/search_ab_<label>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from benchmarks.common import stop_group
from benchmarks.search_setup import (
    ADMIN,
    RESULTS,
    ROOT,
    cases,
    embed_every_query,
    graph_catch_up,
    load,
    start,
    texts,
    timed,
    vectors,
)
from memory_service.config import Settings
from memory_service.infra import db

DEFAULT_CASES = "vector,text vector,text default,keyword"


def serve(s: dict[str, Any], root: Path, port: int, vecs: np.ndarray, docs: list[str]) -> None:
    """Start ``root``'s service and load it; ``s`` holds what to stop, as soon as it exists."""
    s["data_dir"] = Path(tempfile.mkdtemp(prefix="search-ab-"))
    s["proc"] = start(root, port, s["data_dir"])
    client = s["client"] = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    r = client.post(
        "/v1/admin/tenants", json={"name": "ab"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    client.headers["Authorization"] = f"Bearer {r.json()['api_key']}"
    load(client, vecs, docs)
    graph_catch_up(s["data_dir"], r.json()["id"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    docs, words = texts(Path(args.data))
    vecs = vectors(args.size, seed=1)
    qs = vectors(args.queries, seed=2)
    bodies = cases(qs, words)
    bodies = {name: bodies[name] for name in args.cases.split(",")}
    trees = {"baseline": Path(args.baseline).resolve(), "this tree": Path(args.root).resolve()}
    services: dict[str, dict[str, Any]] = {}
    try:
        for offset, (name, root) in enumerate(trees.items()):
            services[name] = {}
            serve(services[name], root, args.port + offset, vecs, docs)
        for s in services.values():
            embed_every_query(s["client"], words, len(qs))
            for i in range(20):  # warm-up
                for body in bodies.values():
                    timed(s["client"], "POST", "/v1/memories/search", json=body(i))
        times: dict[str, dict[str, list[float]]] = {
            tree: {name: [] for name in ["health", *bodies]} for tree in services
        }
        for i in tqdm(range(len(qs)), desc="rounds (both trees)", unit="round"):
            order = list(services.items())
            if i % 2:
                order.reverse()  # neither tree always goes first
            for tree, s in order:
                times[tree]["health"].append(timed(s["client"], "GET", "/health")[0])
                for name, body in bodies.items():
                    ms, _ = timed(s["client"], "POST", "/v1/memories/search", json=body(i))
                    times[tree][name].append(ms)
    finally:
        for s in services.values():
            if "client" in s:
                s["client"].close()
            if "proc" in s:
                stop_group(s["proc"])
            if "data_dir" in s:
                db.stop_embedded(Settings(data_dir=str(s["data_dir"])))
                shutil.rmtree(s["data_dir"], ignore_errors=True)
    out: dict[str, Any] = {
        "label": args.label,
        "memories": args.size,
        "queries": args.queries,
        "trees": {name: str(root) for name, root in trees.items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "latency": {},
    }
    for tree, series in times.items():
        out["latency"][tree] = {
            name: {
                "p50_ms": round(float(np.percentile(v, 50)), 3),
                "p99_ms": round(float(np.percentile(v, 99)), 3),
            }
            for name, v in series.items()
        }
    return out


def markdown(r: dict[str, Any]) -> str:
    names = list(next(iter(r["latency"].values())))
    lines = [
        (
            f"Two trees over HTTP, interleaved ({r['label']}): {r['memories']:,} memories, "
            f"{r['queries']} rounds; load average {r['load_average']} at the end. Baseline: "
            f"`{r['trees']['baseline']}`."
        ),
        "",
        "| search | " + " | ".join(f"{t} p50 ms | {t} p99 ms" for t in r["latency"]) + " |",
        "|---|" + "---|---|" * len(r["latency"]),
    ]
    for name in names:
        cells = " | ".join(
            f"{lat[name]['p50_ms']} | {lat[name]['p99_ms']}" for lat in r["latency"].values()
        )
        lines.append(f"| {name} | {cells} |")
    if "text default" in names and "text vector" in names:
        lines += ["", 'The default (no mode, hybrid) over `mode: "vector"`, same query text:', ""]
        for tree, lat in r["latency"].items():
            p50 = lat["text default"]["p50_ms"] / lat["text vector"]["p50_ms"]
            p99 = lat["text default"]["p99_ms"] / lat["text vector"]["p99_ms"]
            lines.append(f"- {tree}: p50 {p50:.2f}x, p99 {p99:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="source tree to compare against")
    parser.add_argument("--root", default=str(ROOT), help="source tree of the service to run")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--port", type=int, default=18191, help="this and the next one")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    report = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "search_ab_" + "".join(c if c.isalnum() else "_" for c in args.label)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
