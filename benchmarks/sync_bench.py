"""Change feed and replica numbers over real HTTP, each beside a baseline from the same run.

Runs two ``memory-service serve`` processes (A and B) on one fresh embedded
PostgreSQL and measures:

- change-to-client latency: tasks created one at a time on A, timed until their
  change arrives on a ``/v1/changes/stream`` served by B; baseline: the POST's
  own round trip;
- catch-up: a replica (``memory-service-client``) bootstrapped while the tenant was
  empty, then offline while N changes commit (half memories with embeddings, half
  task inserts and updates, written straight into the tables), then timed until
  ``sync()`` has applied them all; baselines: reading the same change rows with
  psycopg alone, and a fresh replica bootstrapping from a snapshot;
- exactly once: W concurrent writers on A create, update and delete tasks and
  memories for S seconds while a stream on B and a pager on A read the feed;
  every acknowledged change is counted against what each reader got (missing,
  duplicated, and per-entity version order).

Writes ``benchmarks/results/sync.json`` and ``sync.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import psycopg
from memory_service_client import Replica
from tqdm import tqdm

from benchmarks.common import ADMIN_TOKEN, ServiceProcess, machine, percentiles
from benchmarks.sync_writers import exactly_once
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.infra.migrate import run_migrations

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def new_tenant(http: httpx.AsyncClient, base: str) -> dict[str, str]:
    r = await http.post(f"{base}/v1/admin/tenants", json={"name": "bench"}, headers=ADMIN)
    r.raise_for_status()
    body = r.json()
    return {"id": body["id"], "key": body["api_key"]}


def auth(tenant: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant['key']}"}


async def stream_latency(a: str, b: str, tenant: dict[str, str], count: int) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delivery: list[float] = []
    round_trips: list[float] = []
    done = asyncio.Event()
    ready = asyncio.Event()

    async def listen() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream("GET", f"{b}/v1/changes/stream", headers=auth(tenant)) as response,
        ):
            ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    title = json.loads(line[6:])["entity"]["title"]
                    delivery.append(time.perf_counter() - sent[title])
                    if len(delivery) == count:
                        done.set()
                        return

    listener = asyncio.create_task(listen())
    await ready.wait()
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=60) as http:
        for i in tqdm(range(count), desc="change-to-client latency"):
            title = f"ping-{i}"
            sent[title] = time.perf_counter()
            r = await http.post(f"{a}/v1/tasks", json={"title": title}, headers=auth(tenant))
            round_trips.append(time.perf_counter() - sent[title])
            r.raise_for_status()
            await asyncio.sleep(0.02)
    await asyncio.wait_for(done.wait(), 60)
    await listener
    return {"delivery": percentiles(delivery), "post_round_trip": percentiles(round_trips)}


def write_changes(url: str, tenant_id: str, count: int) -> None:
    """``count`` changes straight into the tables, in transactions of 5,000 changes."""
    quarter = count // 4
    with psycopg.connect(url, autocommit=True) as conn:
        for start in tqdm(range(0, quarter, 2500), desc="writing changes"):
            n = min(2500, quarter - start)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO memories (tenant_id, content, content_hash, embedding) "
                    "SELECT %(t)s, 'memory ' || i, sha256(convert_to('memory ' || i, 'UTF8')), "
                    "(SELECT array_agg(random())::vector FROM generate_series(1, 384) "
                    " WHERE i IS NOT NULL) "
                    "FROM generate_series(%(s)s, %(s)s + %(n)s - 1) AS i",
                    {"t": tenant_id, "s": start, "n": n},
                )
                conn.execute(
                    "INSERT INTO tasks (tenant_id, title) "
                    "SELECT %(t)s, 'task ' || i FROM generate_series(%(s)s, %(s)s + %(n)s - 1) i",
                    {"t": tenant_id, "s": start, "n": n},
                )
        for _ in tqdm(range(2), desc="updating tasks"):
            conn.execute(
                "UPDATE tasks SET version = version + 1, updated_at = clock_timestamp() "
                "WHERE tenant_id = %s",
                (tenant_id,),
            )


def raw_read(url: str, tenant_id: str) -> tuple[int, float]:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        rows = conn.cursor(binary=True).execute(
            "SELECT c.seq, c.body, m.embedding FROM changes c LEFT JOIN memories m "
            "ON m.id = c.entity_id AND m.version = c.version WHERE c.tenant_id = %s "
            "ORDER BY c.seq",
            (tenant_id,),
        ).fetchall()
        return len(rows), time.perf_counter() - started


async def catch_up(url: str, a: str, tenant: dict[str, str], count: int, work: Path) -> Any:
    replica = Replica(a, tenant["key"], str(work / "replica.db"), timeout=120)
    try:
        await anyio.to_thread.run_sync(replica.sync)
        await anyio.to_thread.run_sync(write_changes, url, tenant["id"], count)
        started = time.perf_counter()
        applied = await anyio.to_thread.run_sync(replica.pull)
        elapsed = time.perf_counter() - started
        local = sum(replica.store.count(t) for t in ("memory", "task"))
    finally:
        replica.close()
    fresh = Replica(a, tenant["key"], str(work / "fresh.db"), timeout=120)
    try:
        started = time.perf_counter()
        snapshot_rows = await anyio.to_thread.run_sync(fresh.bootstrap)
        snapshot_s = time.perf_counter() - started
    finally:
        fresh.close()
    rows, raw_s = raw_read(url, tenant["id"])
    return {
        "changes": applied,
        "entities_in_replica": local,
        "replica_catch_up_s": round(elapsed, 2),
        "changes_per_s": round(applied / elapsed),
        "baseline_psycopg_read_s": round(raw_s, 2),
        "baseline_rows": rows,
        "ratio_to_psycopg_read": round(elapsed / raw_s, 2),
        "snapshot_bootstrap_s": round(snapshot_s, 2),
        "snapshot_entities": snapshot_rows,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work))
    url = db.resolve_database_url(settings)
    run_migrations(url, 384)
    services = [ServiceProcess(url, work, work / f"service-{n}.log") for n in "ab"]
    try:
        for service in services:
            service.env["MEMORY_SSE_HEARTBEAT_SECONDS"] = "2"
            service.start()
        a, b = (s.base_url for s in services)
        async with httpx.AsyncClient(timeout=60) as http:
            tenants = [await new_tenant(http, a) for _ in range(3)]
        parts = set(args.parts.split(","))
        result: dict[str, Any] = {"machine": machine()}
        if "latency" in parts:
            latency = await stream_latency(a, b, tenants[0], args.pings)
            result["latency"] = {**latency, "pings": args.pings}
        if "catchup" in parts:
            result["catch_up"] = await catch_up(url, a, tenants[1], args.changes, work)
        if "once" in parts:
            result["exactly_once"] = await exactly_once(
                a, b, auth(tenants[2]), args.writers, args.seconds
            )
    finally:
        for service in services:
            service.stop()
        db.stop_embedded(settings)
    return result


def markdown(result: dict[str, Any]) -> str:
    lat, catch, once = result["latency"], result["catch_up"], result["exactly_once"]
    row = "| {} | {p50_ms} | {p95_ms} | {p99_ms} |"
    return "\n".join(
        [
            "# Change feed and replica benchmark",
            "",
            f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['note']}.",
            "",
            (
                f"| {lat['pings']} tasks created on A, change on B's SSE stream | p50 ms | p95 ms "
                "| p99 ms |"
            ),
            "|---|---|---|---|",
            row.format("POST on A to change on B's stream", **lat["delivery"]),
            row.format("baseline: the POST round trip alone", **lat["post_round_trip"]),
            "",
            f"| catch-up of {catch['changes']} changes | seconds | changes/s |",
            "|---|---|---|",
            (
                f"| replica `pull()` (HTTP pages + SQLite) | {catch['replica_catch_up_s']} | "
                f"{catch['changes_per_s']} |"
            ),
            f"| baseline: psycopg reading the same rows | {catch['baseline_psycopg_read_s']} | |",
            (
                f"| a fresh replica from a snapshot ({catch['snapshot_entities']} entities) | "
                f"{catch['snapshot_bootstrap_s']} | |"
            ),
            "",
            (
                f"| {once['writers']} writers x {once['seconds']} s | acknowledged changes | "
                "missing | duplicated | out of order |"
            ),
            "|---|---|---|---|---|",
            *(
                f"| {name} | {once['acknowledged']} | {r['missing']} | {r['duplicated']} | "
                f"{r['out_of_order']} |"
                for name, r in once["readers"].items()
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--parts", default="latency,catchup,once", help="which parts to run")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.parts != "latency,catchup,once":  # a partial run updates its parts only
        previous = RESULTS / "sync.json"
        if previous.exists():
            result = {**json.loads(previous.read_text()), **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sync.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "sync.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
