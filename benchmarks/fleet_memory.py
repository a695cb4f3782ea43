"""Memory per replica behind deploy/nginx.conf: tenant affinity (as shipped) against round-robin.

Two ``memory-service serve`` processes on one embedded PostgreSQL run behind Debian's
nginx with the shipped ``deploy/nginx.conf`` (only its addresses rendered), then with
the same file minus its ``hash`` line, which is nginx's round-robin. Each of
``--tenants`` tenants writes ``--vectors`` supplied vectors through the proxy in
batches of 1,000 and searches ``--searches`` times; then each replica's RSS (and
what its FAISS cache says it holds) is read. Each mode gets a fresh database.

    python -m benchmarks.fleet_memory --tenants 4 --vectors 3000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from benchmarks.common import ADMIN_TOKEN, ServiceProcess, free_port, rss_mb, synthetic_vectors
from memory_service.config import Settings
from memory_service.infra import db

SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def render(listen: int, ports: list[int], folder: Path, *, affinity: bool) -> Path:
    text = SHIPPED.read_text()
    for name, port in zip(re.findall(r"^\s*server (api-\d+):8080\b", text, re.M), ports, strict=True):
        text = re.sub(rf"\bserver {name}:8080\b", f"server 127.0.0.1:{port}", text)
    text = re.sub(r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{listen};", text, flags=re.M)
    text = text.replace("http {", f"http {{\n  access_log {folder / 'access.log'};", 1)
    if not affinity:
        text, n = re.subn(r"^\s*hash \$tenant_key consistent;\n", "", text, flags=re.M)
        assert n == 1
    path = folder / ("affinity.conf" if affinity else "round-robin.conf")
    path.write_text(text)
    return path


def faiss_status(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = {}
    for metric in ("memory_index_size", "memory_index_bytes"):
        match = re.search(rf'^{metric}\{{index="faiss"\}} ([0-9.e+]+)$', text, re.M)
        found[metric] = float(match[1]) if match else float("nan")
    return found


def run_mode(url: str, work: Path, args: argparse.Namespace, *, affinity: bool) -> dict[str, Any]:
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = make_conninfo(url, dbname=name)
    replicas = [ServiceProcess(database, work / f"data-{n}", work / f"{n}.log") for n in ("r1", "r2")]
    nginx = None
    try:
        for n, replica in zip(("r1", "r2"), replicas, strict=True):
            replica.env.update({"MEMORY_REPLICA_ID": n, "MEMORY_FAISS_PRELOAD": "false"})
            replica.start()
        listen = free_port()
        conf = render(listen, [r.port for r in replicas], work, affinity=affinity)
        nginx = subprocess.Popen(
            ["/usr/sbin/nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf),
             "-g", f"daemon off; pid {work / 'nginx.pid'};"],
        )
        public = f"http://127.0.0.1:{listen}"
        time.sleep(0.5)
        idle = {n: rss_mb(r.process.pid if r.process else None) for n, r in zip(("r1", "r2"), replicas, strict=True)}
        served: dict[str, dict[str, int]] = {}
        started = time.monotonic()
        with httpx.Client(timeout=120) as http:
            for t in range(args.tenants):
                made = http.post(f"{public}/v1/admin/tenants", json={"name": f"bench-{t}"}, headers=ADMIN)
                made.raise_for_status()
                headers = {"Authorization": f"Bearer {made.json()['api_key']}"}
                vectors = synthetic_vectors(args.vectors, seed=t)
                counts = served.setdefault(f"tenant-{t}", {})
                for start in range(0, args.vectors, 1000):
                    items = [{"content": f"t{t} fact {i}", "embedding": vectors[i].tolist()}
                             for i in range(start, min(start + 1000, args.vectors))]
                    r = http.post(f"{public}/v1/memories/batch", json={"items": items}, headers=headers)
                    r.raise_for_status()
                    counts[r.headers["x-served-by"]] = counts.get(r.headers["x-served-by"], 0) + 1
                for i in range(args.searches):
                    body = {"embedding": vectors[i].tolist(), "k": 10, "mode": "vector"}
                    r = http.post(f"{public}/v1/memories/search", json=body, headers=headers)
                    r.raise_for_status()
                    counts[r.headers["x-served-by"]] = counts.get(r.headers["x-served-by"], 0) + 1
        elapsed = time.monotonic() - started
        time.sleep(2)  # the other replica's follower catches up with what it holds
        replicas_out = {}
        for n, replica in zip(("r1", "r2"), replicas, strict=True):
            status = faiss_status(replica.base_url)
            replicas_out[n] = {
                "rss_mb_idle": idle[n],
                "rss_mb": rss_mb(replica.process.pid if replica.process else None),
                "faiss_vectors": int(status["memory_index_size"]),
                "faiss_mb": round(status["memory_index_bytes"] / 2**20, 1),
            }
        return {"requests_by_replica": served, "replicas": replicas_out, "load_s": round(elapsed, 1)}
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        for replica in replicas:
            replica.stop()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--vectors", type=int, default=3000)
    parser.add_argument("--searches", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work))
    url = db.resolve_database_url(settings)
    try:
        result = {
            "load_average": os.getloadavg(),
            "tenants": args.tenants,
            "vectors_per_tenant": args.vectors,
            "affinity": run_mode(url, work, args, affinity=True),
            "round_robin": run_mode(url, work, args, affinity=False),
        }
    finally:
        db.stop_embedded(settings)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
