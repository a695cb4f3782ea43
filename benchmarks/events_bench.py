"""Event log numbers over real HTTP: ingest throughput and live-stream delivery latency.

Runs two ``memory-service serve`` processes (A and B) on one fresh embedded
PostgreSQL and measures, each beside a baseline taken in the same run:

- ingest: events per second posted to A in batches of 100 by 4 concurrent clients,
  once all into one tenant (they serialise on the tenant's ordering lock) and once
  spread over 4 tenants; the baseline is the same rows written straight into the
  ``events`` table with psycopg (no HTTP, no validation, no ordering lock, no NOTIFY);
- stream latency: an SSE stream on B, single events posted to A; the time from just
  before the POST to the event arriving on B's stream, beside the round trip of the
  POST itself (the part of the latency that is not fan-out).

Writes ``benchmarks/results/events.json`` and ``events.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from tqdm import tqdm

from benchmarks.common import ADMIN_TOKEN, ServiceProcess, machine, percentiles
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.infra.migrate import run_migrations

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def event(i: int) -> dict[str, Any]:
    return {
        "type": "tool.call" if i % 3 else "agent.step",
        "severity": "info",
        "task_id": f"task-{i % 50}",
        "duration_ms": float(i % 1000),
        "attributes": {"tool": "search", "i": i},
    }


async def new_tenant(http: httpx.AsyncClient, base: str) -> dict[str, str]:
    r = await http.post(f"{base}/v1/admin/tenants", json={"name": "bench"}, headers=ADMIN)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


async def ingest(base: str, tenants: list[dict[str, str]], batches: int, size: int) -> float:
    """Events per second with one client per tenant entry, ``batches`` batches each."""
    progress = tqdm(total=batches * len(tenants), desc=f"ingest x{len(set(map(str, tenants)))}")

    async def client(headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for b in range(batches):
                items = [event(b * size + i) for i in range(size)]
                r = await http.post(f"{base}/v1/events", json={"items": items}, headers=headers)
                r.raise_for_status()
                progress.update()

    started = time.perf_counter()
    await asyncio.gather(*(client(h) for h in tenants))
    elapsed = time.perf_counter() - started
    progress.close()
    return batches * size * len(tenants) / elapsed


def raw_insert_rate(url: str, tenant_id: str, rows: int, size: int) -> float:
    """The baseline: the same rows straight into the table, one batch per statement."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for b in tqdm(range(rows // size), desc="raw insert"):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (tenant_id, type, severity, ts, task_id, duration_ms, "
                    "attributes) VALUES (%s, %s, 1, now(), %s, %s, %s)",
                    [
                        (
                            tenant_id,
                            e["type"],
                            e["task_id"],
                            e["duration_ms"],
                            Jsonb(e["attributes"]),
                        )
                        for e in (event(b * size + i) for i in range(size))
                    ],
                )
        return rows / (time.perf_counter() - started)


async def stream_latency(a: str, b: str, headers: dict[str, str], count: int) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delivery: list[float] = []
    round_trips: list[float] = []
    done = asyncio.Event()

    async def listen(ready: asyncio.Event) -> None:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "GET", f"{b}/v1/events/stream", params={"type": "bench"}, headers=headers
            ) as response,
        ):
            ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    arrived = time.perf_counter()
                    marker = json.loads(line[6:])["attributes"]["marker"]
                    delivery.append(arrived - sent[marker])
                    if len(delivery) == count:
                        done.set()
                        return

    ready = asyncio.Event()
    listener = asyncio.create_task(listen(ready))
    await ready.wait()
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in tqdm(range(count), desc="stream latency"):
            marker = uuid.uuid4().hex
            body = {"items": [{"type": "bench.ping", "attributes": {"marker": marker}}]}
            sent[marker] = time.perf_counter()
            r = await http.post(f"{a}/v1/events", json=body, headers=headers)
            round_trips.append(time.perf_counter() - sent[marker])
            r.raise_for_status()
            await asyncio.sleep(0.02)
    await asyncio.wait_for(done.wait(), 60)
    await listener
    return {"delivery": percentiles(delivery), "post_round_trip": percentiles(round_trips)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="events-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work))
    url = db.resolve_database_url(settings)
    run_migrations(url, 384)
    services = [ServiceProcess(url, work, work / f"service-{n}.log") for n in "ab"]
    try:
        for service in services:
            service.start()
        a, b = (s.base_url for s in services)
        async with httpx.AsyncClient(timeout=60) as http:
            tenants = [await new_tenant(http, a) for _ in range(4)]
        single = await ingest(a, [tenants[0]] * 4, args.batches, 100)
        spread = await ingest(a, tenants, args.batches, 100)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT id FROM tenants ORDER BY created_at LIMIT 1").fetchone()
        assert row is not None
        raw = raw_insert_rate(url, str(row[0]), args.batches * 4 * 100, 100)
        latency = await stream_latency(a, b, tenants[1], args.pings)
    finally:
        for service in services:
            service.stop()
        db.stop_embedded(settings)
    return {
        "machine": machine(),
        "batches_per_client": args.batches,
        "batch_size": 100,
        "ingest_events_per_s": {
            "one_tenant_4_clients": round(single),
            "four_tenants_4_clients": round(spread),
            "baseline_raw_insert": round(raw),
            "ratio_one_tenant_to_raw": round(single / raw, 3),
            "ratio_four_tenants_to_raw": round(spread / raw, 3),
        },
        "stream": {**latency, "pings": args.pings},
    }


def markdown(result: dict[str, Any]) -> str:
    ingest_rates = result["ingest_events_per_s"]
    stream = result["stream"]
    return "\n".join(
        [
            "# Event log benchmark",
            "",
            f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['note']}.",
            "",
            "| ingest (batches of 100, 4 clients) | events/s | vs raw INSERT |",
            "|---|---|---|",
            (
                f"| one tenant | {ingest_rates['one_tenant_4_clients']} | "
                f"{ingest_rates['ratio_one_tenant_to_raw']} |"
            ),
            (
                f"| four tenants | {ingest_rates['four_tenants_4_clients']} | "
                f"{ingest_rates['ratio_four_tenants_to_raw']} |"
            ),
            f"| baseline: psycopg INSERT, no HTTP | {ingest_rates['baseline_raw_insert']} | 1.0 |",
            "",
            f"| stream, {stream['pings']} single events A -> SSE on B | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|",
            "| POST to delivery on the other process | {p50_ms} | {p95_ms} | {p99_ms} |".format(
                **stream["delivery"]
            ),
            "| baseline: the POST round trip alone | {p50_ms} | {p95_ms} | {p99_ms} |".format(
                **stream["post_round_trip"]
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50, help="batches of 100 per client")
    parser.add_argument("--pings", type=int, default=200, help="events timed through a stream")
    result = asyncio.run(run(parser.parse_args()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "events.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "events.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
