"""Execution history numbers: storage, state at any step, diff, append over HTTP, fork.

One run on a fresh embedded PostgreSQL, each number beside its baseline from the
same run:

- an execution of ``--steps`` steps whose state is ~100 KB of JSON (``--keys``
  entries of ~100 bytes) and where each step replaces ~10 entries (~1 KB), written
  as RFC 6902 patches through ``ExecutionService`` in batches;
- storage: ``pg_total_relation_size`` of the execution tables against storing a
  full copy per step, the latter both as raw JSON bytes and as measured by writing
  ``--sample`` full copies into a jsonb table (TOAST compression included) and
  scaling to ``--steps``;
- state at random steps in-process with an empty state cache (p50/p95), and the
  diff between the first and the last step;
- appending one ~1 KB-patch step over HTTP to a real ``memory-service serve`` vs
  ``GET /health`` on the same server, interleaved (p50 ratio), with the service's
  own per-stage timing of both (from ``/metrics``); then a batch of ``--http-batch``
  such steps vs one step, interleaved (``--http-only`` runs only these);
- forking at step 9,000 (p50 time and the number of step rows the fork holds).

Writes ``benchmarks/results/executions.json`` and ``executions.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import string
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from tqdm import tqdm

from benchmarks.common import (
    ADMIN_TOKEN,
    UNLIMITED_TENANT,
    ServiceProcess,
    machine,
    percentiles,
    stage_delta,
    stage_seconds,
    stage_table,
    wait_for_quiet,
)
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.executions import ExecutionLimits, ExecutionService, NewExecution, NewStep
from memory_service.infra import db
from memory_service.runtime import Runtime

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TABLES = ("executions", "execution_steps", "execution_checkpoints")


def text(rng: random.Random, n: int = 90) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def initial_state(rng: random.Random, keys: int) -> dict[str, Any]:
    return {"turn": 0, "facts": {f"k{i:05d}": text(rng) for i in range(keys)}}


def change(rng: random.Random, keys: int, step: int, per_step: int = 10) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [{"op": "replace", "path": "/turn", "value": step}]
    for i in rng.sample(range(keys), per_step):
        ops.append({"op": "replace", "path": f"/facts/k{i:05d}", "value": text(rng)})
    return ops


async def build(service: ExecutionService, tid: uuid.UUID, args: argparse.Namespace) -> tuple[str, int]:
    rng = random.Random(7)
    state = initial_state(rng, args.keys)
    state_bytes = len(json.dumps(state, separators=(",", ":")))
    execution = await service.create(tid, NewExecution(agent_id="bench"))
    await service.append_steps(tid, execution.id, [NewStep(kind="start", state=state)])
    progress = tqdm(total=args.steps, desc="append steps", initial=1)
    seq = 1
    while seq < args.steps:
        batch = [
            NewStep(kind="tool", name="edit", state_patch=change(rng, args.keys, seq + i + 1))
            for i in range(min(args.batch, args.steps - seq))
        ]
        await service.append_steps(tid, execution.id, batch)
        seq += len(batch)
        progress.update(len(batch))
    progress.close()
    return execution.id, state_bytes


def storage(url: str, sample: int, steps: int, state: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE execution_steps")
        stored = sum(
            int(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0])  # type: ignore[index]
            for t in TABLES
        )
        conn.execute("CREATE TABLE bench_full_copies (seq int PRIMARY KEY, state jsonb NOT NULL)")
        rng = random.Random(11)
        with conn.cursor() as cur:
            for i in tqdm(range(sample), desc="baseline full copies"):
                state["facts"][f"k{rng.randrange(len(state['facts'])):05d}"] = text(rng)
                cur.execute("INSERT INTO bench_full_copies VALUES (%s, %s)", (i, Jsonb(state)))
        conn.execute("VACUUM ANALYZE bench_full_copies")
        copies = int(conn.execute("SELECT pg_total_relation_size('bench_full_copies')").fetchone()[0])  # type: ignore[index]
        conn.execute("DROP TABLE bench_full_copies")
    raw = len(json.dumps(state, separators=(",", ":"))) * steps
    measured = copies / sample * steps
    return {
        "stored_bytes": stored,
        "full_copies_raw_bytes": raw,
        "full_copies_jsonb_bytes_scaled": round(measured),
        "ratio_to_raw": round(stored / raw, 4),
        "ratio_to_jsonb": round(stored / measured, 4),
    }


async def reads(service: ExecutionService, tid: uuid.UUID, eid: str, args: argparse.Namespace) -> dict[str, Any]:
    cold = ExecutionService(service.pool, service.cursors, ExecutionLimits(cache_bytes=0))
    seqs = random.Random(3).sample(range(1, args.steps + 1), args.reads)
    timings = []
    for seq in tqdm(seqs, desc="state at random steps"):
        started = time.perf_counter()
        await cold.state_at(tid, eid, seq)
        timings.append(time.perf_counter() - started)
    diffs = []
    for _ in range(10):
        started = time.perf_counter()
        result = await cold.diff(tid, eid, 1, args.steps)
        diffs.append(time.perf_counter() - started)
    fork_times, fork_rows = [], []
    for _ in range(20):
        started = time.perf_counter()
        fork = await service.fork(tid, eid, min(9000, args.steps))
        fork_times.append(time.perf_counter() - started)
        async with service.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM execution_steps WHERE execution_id = %s", (fork.id,)
            )
            row = await cur.fetchone()
            fork_rows.append(int(row[0]) if row else -1)
    round_trips = []
    async with service.pool.connection() as conn:
        for _ in range(args.reads):
            started = time.perf_counter()
            await conn.execute("SELECT 1")
            round_trips.append(time.perf_counter() - started)
    return {
        "select_1": percentiles(round_trips),
        "state_at": {**percentiles(timings), "samples": len(timings)},
        "diff_first_last": {
            **percentiles(diffs),
            "max_ms": round(max(diffs) * 1000, 3),
            "patch_ops": len(result.patch),
        },
        "fork_at_9000": {**percentiles(fork_times), "max_ms": round(max(fork_times) * 1000, 3),
                         "step_rows_copied": max(fork_rows)},
    }


async def http_append(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One step, a batch of ``--http-batch`` steps and ``GET /health``, interleaved on
    one server, so that each ratio compares numbers taken under the same load."""
    service = ServiceProcess(url, work, work / "service.log")
    service.env.update(UNLIMITED_TENANT)
    service.start()
    load_before = os.getloadavg()
    floor = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await floor.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor (n int)")
    commits: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as http:
            r = await http.post("/v1/admin/tenants", json={"name": "bench-http"}, headers=ADMIN)
            h = {"Authorization": f"Bearer {r.json()['api_key']}"}
            rng = random.Random(5)
            eid = (await http.post("/v1/executions", json={}, headers=h)).json()["id"]
            first = {"kind": "start", "state": initial_state(rng, args.keys)}
            (await http.post(f"/v1/executions/{eid}/steps", json=first, headers=h)).raise_for_status()
            appends, health, batches, ones = [], [], [], []
            # one step against /health; the stages are read around this part alone
            stages_before = await stage_seconds(http)
            for i in tqdm(range(args.http_steps + 20), desc="append over HTTP vs /health"):
                body: Any = {"kind": "tool", "state_patch": change(rng, args.keys, i + 2)}
                started = time.perf_counter()
                r = await http.post(f"/v1/executions/{eid}/steps", json=body, headers=h)
                elapsed = time.perf_counter() - started
                r.raise_for_status()
                started = time.perf_counter()
                (await http.get("/health")).raise_for_status()
                health_elapsed = time.perf_counter() - started
                # the durability floor: one row committed (WAL flushed) on the same database
                started = time.perf_counter()
                await floor.execute("INSERT INTO bench_commit_floor VALUES (%s)", (i,))
                commit_elapsed = time.perf_counter() - started
                if i >= 20:  # warm-up
                    appends.append(elapsed)
                    health.append(health_elapsed)
                    commits.append(commit_elapsed)
            stages = stage_delta(stages_before, await stage_seconds(http))
            # a batch against one step
            for i in tqdm(range(args.http_batches), desc=f"batches of {args.http_batch}"):
                for size in (args.http_batch, 1):
                    body = [
                        {"kind": "tool", "state_patch": change(rng, args.keys, i + 2)}
                        for _ in range(size)
                    ]
                    started = time.perf_counter()
                    r = await http.post(f"/v1/executions/{eid}/steps", json=body, headers=h)
                    (batches if size > 1 else ones).append(time.perf_counter() - started)
                    r.raise_for_status()
    finally:
        service.stop()
        await floor.close()
    append_p = percentiles(appends)
    commit_p = percentiles(commits)
    health_p = percentiles(health)
    batch_p = percentiles(batches)
    ones_p = percentiles(ones)
    return {
        "append": append_p,
        "health": health_p,
        "batch": batch_p,
        "batch_steps": args.http_batch,
        "ratio_p50": round(append_p["p50_ms"] / health_p["p50_ms"], 2),
        "commit": commit_p,
        # what an append costs beyond the two things it cannot skip: a request and a commit
        "ratio_to_floor_p50": round(
            append_p["p50_ms"] / (health_p["p50_ms"] + commit_p["p50_ms"]), 2
        ),
        "one_beside_batches": ones_p,
        "batch_to_one_p50": round(batch_p["p50_ms"] / ones_p["p50_ms"], 2),
        # a step right after a batch pays for the batch's aftermath (its 100 events are
        # written meanwhile): against the steps of the /health part too
        "batch_to_one_p50_health_part": round(batch_p["p50_ms"] / append_p["p50_ms"], 2),
        "samples": len(appends),
        "batch_samples": len(batches),
        "patch_bytes": len(json.dumps(change(random.Random(1), args.keys, 1))),
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "stages": stages,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="executions-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work), admin_token=ADMIN_TOKEN)
    runtime = await Runtime.start(settings, embedder=HashEmbedder(384))
    try:
        if args.http_only:
            return {
                "machine": machine(),
                "http_append": await http_append(runtime.database_url, work, args),
            }
        tenant, _ = await runtime.tenants.create_tenant("bench")
        tid = uuid.UUID(tenant.id)
        eid, state_bytes = await build(runtime.executions, tid, args)
        final = await runtime.executions.state_at(tid, eid, args.steps)
        read_numbers = await reads(runtime.executions, tid, eid, args)
        sizes = storage(runtime.database_url, args.sample, args.steps, final.state)
        http = await http_append(runtime.database_url, work, args)
    finally:
        await runtime.close()
        db.stop_embedded(settings)
    return {
        "machine": machine(),
        "steps": args.steps,
        "state_bytes": state_bytes,
        "keyframe_interval": settings.execution_keyframe_interval,
        "storage": sizes,
        **read_numbers,
        "http_append": http,
    }


APPEND_ROUTE = "POST /v1/executions/{execution_id}/steps"


def http_markdown(h: dict[str, Any]) -> list[str]:
    """The HTTP append rows and where the service says the time went."""
    return [
        (f"| append one step over HTTP, p50 | {h['append']['p50_ms']} ms | `GET /health` p50 "
        f"{h['health']['p50_ms']} ms | {h['ratio_p50']}x | <= 2x |"),
        *(
            [
                (f"| same, against a request plus a durable commit | | `GET /health` + one-row "
                f"`INSERT` commit p50 {h['commit']['p50_ms']} ms | {h['ratio_to_floor_p50']}x | |")
            ]
            if "commit" in h
            else []
        ),
        (f"| append a batch of {h['batch_steps']} steps over HTTP, p50 | {h['batch']['p50_ms']} ms "
        f"| one step p50 {h['one_beside_batches']['p50_ms']} ms (interleaved with the batches) "
        f"/ {h['append']['p50_ms']} ms (interleaved with /health) | {h['batch_to_one_p50']}x / "
        f"{h['batch_to_one_p50_health_part']}x | <= 10x |"),
        "",
        f"Load average (1, 5, 15 min) before and after the HTTP part: {h['load_average']}.",
        "",
        "Where the time went, as the service measured it (mean ms per request):",
        "",
        *stage_table(h["stages"], [APPEND_ROUTE, "GET /health"]),
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    if "storage" not in r:  # --http-only
        return "\n".join([
            "# Execution appends over HTTP",
            "",
            f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['note']}.",
            "",
            "| measure | value | baseline | ratio | target |",
            "|---|---|---|---|---|",
            *http_markdown(r["http_append"]),
        ])
    s, h = r["storage"], r["http_append"]
    return "\n".join([
        "# Execution history benchmark",
        "",
        (f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['note']}. {r['steps']:,} steps, "
        f"state {r['state_bytes']:,} bytes, ~1 KB changed per step, keyframe every "
        f"{r['keyframe_interval']} steps."),
        "",
        "| measure | value | baseline | ratio | target |",
        "|---|---|---|---|---|",
        (f"| stored bytes (execution tables) | {s['stored_bytes']:,} | {s['full_copies_raw_bytes']:,} "
        f"raw JSON of full copies | {s['ratio_to_raw']} | <= 0.05 |"),
        (f"| same, vs full copies in jsonb (measured on a sample, scaled) | | "
        f"{s['full_copies_jsonb_bytes_scaled']:,} | {s['ratio_to_jsonb']} | |"),
        (f"| state at a random step, cold cache, p50 / p95 | {r['state_at']['p50_ms']} / "
        f"{r['state_at']['p95_ms']} ms | `SELECT 1` p50 / p95 {r['select_1']['p50_ms']} / "
        f"{r['select_1']['p95_ms']} ms | | p95 <= 20 ms |"),
        (f"| diff first vs last step, p50 / max | {r['diff_first_last']['p50_ms']} / "
        f"{r['diff_first_last']['max_ms']} ms | | | <= 50 ms |"),
        (f"| fork at step 9,000, p50 / max | {r['fork_at_9000']['p50_ms']} / "
        f"{r['fork_at_9000']['max_ms']} ms, {r['fork_at_9000']['step_rows_copied']} rows copied | | "
        "| <= 10 ms, 0 rows |"),
        *http_markdown(h),
    ])


def rewrite_markdown() -> None:
    """Regenerate executions.md from executions.json (after a change to the table)."""
    result = json.loads((RESULTS / "executions.json").read_text())
    (RESULTS / "executions.md").write_text(markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1000, help="state entries of ~100 bytes")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--sample", type=int, default=200, help="full copies for the baseline")
    parser.add_argument("--http-steps", type=int, default=300)
    parser.add_argument("--http-batch", type=int, default=100, help="steps in a batch append")
    parser.add_argument("--http-batches", type=int, default=40)
    parser.add_argument(
        "--http-only", action="store_true", help="only the HTTP appends (no 10,000-step build)"
    )
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet box")
    args = parser.parse_args()
    quiet = None if args.no_wait else round(wait_for_quiet(), 2)
    result = asyncio.run(run(args)) | {"load_before": quiet}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "executions_http" if args.http_only else "executions"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
