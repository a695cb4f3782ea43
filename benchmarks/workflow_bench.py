"""Workflow engine numbers over real HTTP: steps/s, claim latency, end-to-end latency, kill -9.

One ``memory-service serve`` process on a fresh embedded PostgreSQL runs 5-step
workflows of two shapes, a diamond (a -> b, c -> d -> e) and a chain
(a -> b -> c -> d -> e), while worker coroutines claim and complete steps over
HTTP (``/v1/workers/claim`` with long polls, then ``complete``), measuring for
each shape:

- throughput: ``--runs`` runs started while ``--workers`` workers drain them, once
  with workers that complete an attempt and claim the next in one request, once
  with workers that complete and claim in separate requests, each with the
  service's own per-stage timing (from ``/metrics``);
  steps completed per second from the first start to the last completion, and
  each run's end-to-end latency (created to finished, database clock);
- claim latency under load (ready to claimed, from the attempts' own time stamps),
  and with the workers idle in long polls (``--paced`` runs started one by one),
  with those runs' end-to-end latency;
- baseline, same run: the same workers making two cheap authenticated requests
  (``GET /v1/workflows?limit=1``) per would-be step, i.e. the HTTP ceiling for the
  two requests a step costs, measured before, between and after the two ways of
  working; each is reported as a ratio to the mean of the two measured beside it,
  and, since other work on a shared box moves those rates, also as a ratio of CPU
  cost (the service process and its PostgreSQL): two requests' CPU to a step's; and the floor latency of one
  such request made alone, so that a paced run's end-to-end latency compares with
  the floor of the ten requests (claim, complete per step) its steps take;
- kill -9: ``--kill-runs`` runs, the service killed with SIGKILL when a third of
  the steps are done, a new process started on the same database; every run must
  complete, and the number of steps with two recorded outputs must be 0 (counted
  in the database and by the workers' accepted completions).

Writes ``benchmarks/results/<--out>.json`` and ``.md`` (``workflows`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
from tqdm import tqdm

from benchmarks.common import (
    ADMIN_TOKEN,
    UNLIMITED_TENANT,
    ServiceProcess,
    machine,
    percentiles,
    stage_delta,
    stage_seconds,
    wait_for_quiet,
)
from benchmarks.workflow_report import markdown
from benchmarks.workflow_workers import Workers
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.infra.migrate import run_migrations

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DIAMOND = {
    "steps": [
        {"id": "a", "kind": "task", "input": {"n": {"$ref": "input.n"}}},
        {"id": "b", "kind": "task", "depends_on": ["a"], "input": {"x": {"$ref": "steps.a.output.v"}}},
        {"id": "c", "kind": "task", "depends_on": ["a"], "input": {"x": {"$ref": "steps.a.output.v"}}},
        {"id": "d", "kind": "task", "depends_on": ["b", "c"],
         "input": {"l": {"$ref": "steps.b.output.v"}, "r": {"$ref": "steps.c.output.v"}}},
        {"id": "e", "kind": "task", "depends_on": ["d"], "input": {"x": {"$ref": "steps.d.output.v"}}},
    ]
}  # fmt: skip


CHAIN = {
    "steps": [
        {"id": "a", "kind": "task", "input": {"n": {"$ref": "input.n"}}},
        *({"id": b, "kind": "task", "depends_on": [a], "input": {"x": {"$ref": f"steps.{a}.output.v"}}}
          for a, b in ("ab", "bc", "cd", "de")),
    ]
}  # fmt: skip
SHAPES = {"diamond": DIAMOND, "chain": CHAIN}

# generous budgets: on a busy box a stalled worker's lease can run out more than 3 times
for _step in (*DIAMOND["steps"], *CHAIN["steps"]):
    _step["retry"] = {"max_attempts": 20, "backoff_s": 0.5, "max_backoff_s": 5}


class CpuMeter:
    """CPU seconds the service process and its PostgreSQL (postmaster, live backends and
    the ones that exited) have used: what a step costs whatever else the box runs."""

    def __init__(self, service: ServiceProcess, pgdata: Path) -> None:
        self.service, self.pgdata = service, pgdata
        self.tick = os.sysconf("SC_CLK_TCK")

    def _fields(self, pid: int) -> list[str]:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2 :].split()  # from field 3 (state) on

    def seconds(self) -> float:
        return sum(self.split())

    def split(self) -> tuple[float, float]:
        """CPU seconds of the service process and of its database, apart."""
        assert self.service.process is not None
        own = self._fields(self.service.process.pid)
        postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        pm = self._fields(postmaster)
        service = int(own[11]) + int(own[12])
        ticks = sum(int(pm[i]) for i in (11, 12, 13, 14))
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                child = self._fields(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile: its time is in the postmaster's cutime now
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
        return service / self.tick, ticks / self.tick


async def setup(base: str) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(f"{base}/v1/admin/tenants", json={"name": "wf-bench"}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
        for name, body in SHAPES.items():
            r = await http.put(f"{base}/v1/workflows/{name}", json=body, headers=headers)
            r.raise_for_status()
    return headers


async def start_runs(
    base: str, headers: dict[str, str], runs: int, desc: str, shape: str = "diamond"
) -> list[str]:
    ids: list[str] = []
    queue = iter(range(runs))
    bar = tqdm(total=runs, desc=desc)

    async def starter() -> None:
        async with httpx.AsyncClient(timeout=60, headers=headers) as http:
            for n in queue:
                while True:
                    try:
                        r = await http.post(
                            f"{base}/v1/workflows/{shape}/runs", json={"input": {"n": n}}
                        )
                        r.raise_for_status()
                        break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.2)
                ids.append(r.json()["id"])
                bar.update()

    await asyncio.gather(*(starter() for _ in range(4)))
    bar.close()
    return ids


def run_rows(url: str, ids: list[str]) -> list[tuple[str, float | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, extract(epoch FROM finished_at - created_at) FROM workflow_runs "
            "WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()


async def wait_done(url: str, ids: list[str], timeout: float, desc: str) -> float:
    started = time.monotonic()
    bar = tqdm(total=len(ids), desc=desc)
    while True:
        done = sum(status != "running" for status, _ in run_rows(url, ids))
        bar.update(done - bar.n)
        if done == len(ids):
            bar.close()
            return time.monotonic()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"only {done} of {len(ids)} runs finished in {timeout} s")
        await asyncio.sleep(0.25)


def duplicate_outputs(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT step_row FROM workflow_attempts WHERE status = "
            "'completed' GROUP BY step_row HAVING count(*) > 1) AS t"
        ).fetchone()
        steps = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM workflow_steps"
        ).fetchone()
    assert twice is not None and steps is not None
    return {"steps_with_two_outputs": int(twice[0]), "completed_steps": int(steps[0]),
            "steps": int(steps[1])}  # fmt: skip


async def throughput(
    url: str,
    base: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    shape: str,
    cpu: CpuMeter,
    *,
    combined: bool,
) -> dict[str, Any]:
    workers = Workers(base, headers, args.workers, args.max_steps, combined=combined)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        stages_before = await stage_seconds(http)
    pool = asyncio.create_task(workers.run())
    began, cpu_began = time.monotonic(), cpu.split()
    ids = await start_runs(base, headers, args.runs, f"start {shape} runs", shape)
    ended = await wait_done(url, ids, args.timeout, "runs finished")
    cpu_ended = cpu.split()
    service_cpu, database_cpu = (cpu_ended[i] - cpu_began[i] for i in (0, 1))
    cpu_used = service_cpu + database_cpu
    under_load = list(workers.claim_latency)
    # idle workers in long polls: one run at a time
    paced_from = len(workers.claim_latency)
    paced_ids: list[str] = []
    for n in tqdm(range(args.paced), desc="paced runs"):
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            r = await http.post(f"{base}/v1/workflows/{shape}/runs", json={"input": {"n": n}})
        paced_ids.append(r.json()["id"])
        await wait_done(url, paced_ids[-1:], 60, "")
    paced = workers.claim_latency[paced_from:]
    workers.stop = True
    await pool
    latencies = [float(s) for status, s in run_rows(url, ids) if s is not None]
    paced_latencies = [float(s) for status, s in run_rows(url, paced_ids) if s is not None]
    steps = args.runs * 5
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        stages = stage_delta(stages_before, await stage_seconds(http))
    return {
        "shape": shape, "combined": combined, "stages": stages,
        "load_average": list(os.getloadavg()),
        "runs": args.runs, "steps": steps, "seconds": round(ended - began, 2),
        "steps_per_s": round(steps / (ended - began), 1),
        "cpu_ms_per_step": round(1000 * cpu_used / steps, 3),
        "service_cpu_ms_per_step": round(1000 * service_cpu / steps, 3),
        "database_cpu_ms_per_step": round(1000 * database_cpu / steps, 3),
        "claim_latency_under_load": percentiles(under_load),
        "claim_latency_idle_long_poll": percentiles(paced),
        "end_to_end": percentiles(latencies),
        "end_to_end_paced": percentiles(paced_latencies),
    }  # fmt: skip


async def http_ceiling(
    base: str, headers: dict[str, str], args: argparse.Namespace, cpu: CpuMeter
) -> tuple[float, float]:
    """Requests/s of a cheap authenticated endpoint with the same concurrency, and the
    CPU ms (service and database) one costs."""
    requests = min(args.runs * 10, 4000)
    per_worker = requests // args.workers

    async def one() -> None:
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            for _ in range(per_worker):
                (await http.get(f"{base}/v1/workflows", params={"limit": 1})).raise_for_status()

    began, cpu_began = time.monotonic(), cpu.seconds()
    await asyncio.gather(*(one() for _ in range(args.workers)))
    done = per_worker * args.workers
    return done / (time.monotonic() - began), 1000 * (cpu.seconds() - cpu_began) / done


async def floor_latency(base: str, headers: dict[str, str], count: int = 200) -> dict[str, float]:
    """One cheap authenticated request at a time: the floor of any one request."""
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        for _ in range(count):
            began = time.monotonic()
            (await http.get(f"{base}/v1/workflows", params={"limit": 1})).raise_for_status()
            samples.append(time.monotonic() - began)
    return percentiles(samples)


async def kill_and_restart(
    url: str, service: ServiceProcess, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    workers = Workers(service.base_url, headers, args.workers, args.max_steps, combined=True)
    pool = asyncio.create_task(workers.run())
    ids = await start_runs(service.base_url, headers, args.kill_runs, "start runs (kill)")
    while sum(workers.accepted.values()) < args.kill_runs * 5 // 3:
        await asyncio.sleep(0.05)
    service.stop()  # SIGKILL, mid-run
    killed_at = time.monotonic()
    restart_s = service.start()  # same port, same database
    await wait_done(url, ids, args.timeout, "runs finished after kill -9")
    workers.stop = True
    await pool
    statuses = Counter(status for status, _ in run_rows(url, ids))
    return {
        "runs": args.kill_runs, "restart_s": round(restart_s, 2),
        "recovered_s": round(time.monotonic() - killed_at, 2),
        "runs_by_status": dict(statuses),
        "worker_side_steps_accepted_twice": sum(1 for c in workers.accepted.values() if c > 1),
        **duplicate_outputs(url),
    }  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="workflow-bench-"))
    work_dir.chmod(0o755)
    settings = Settings(data_dir=str(work_dir))
    url = db.resolve_database_url(settings)
    run_migrations(url, 384)
    service = ServiceProcess(url, work_dir, work_dir / "service.log")
    service.env.update(UNLIMITED_TENANT)
    shapes: dict[str, Any] = {}
    print(f"load average at start: {os.getloadavg()}")
    try:
        service.start()
        headers = await setup(service.base_url)
        cpu = CpuMeter(service, db.embedded_pgdata(settings))
        for shape in args.shapes:
            shapes[shape] = await measure_shape(url, service.base_url, headers, args, shape, cpu)
        kill = await kill_and_restart(url, service, headers, args) if args.kill_runs else None
    finally:
        service.stop()
        db.stop_embedded(settings)
    print(f"load average at end: {os.getloadavg()}")
    return {"machine": machine(), "workers": args.workers, "max_steps": args.max_steps,
            "shapes": shapes, "kill_9": kill}  # fmt: skip


async def measure_shape(
    url: str, base: str, headers: dict[str, str], args: argparse.Namespace, shape: str,
    cpu: CpuMeter,
) -> dict[str, Any]:  # fmt: skip
    # the baseline before, between and after the two ways of working, each compared
    # with the mean of the two measured next to it: on a shared box the load drifts
    first = await http_ceiling(base, headers, args, cpu)
    separate = await throughput(url, base, headers, args, shape, cpu, combined=False)
    floor = await floor_latency(base, headers)  # beside the paced runs just measured
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        before = await stage_seconds(http)
        middle = await http_ceiling(base, headers, args, cpu)
        ceiling_stages = stage_delta(before, await stage_seconds(http))
    result = await throughput(url, base, headers, args, shape, cpu, combined=True)
    last = await http_ceiling(base, headers, args, cpu)
    for r, around in ((separate, (first, middle)), (result, (middle, last))):
        ceiling = sum(c for c, _ in around) / 2
        request_cpu_ms = sum(ms for _, ms in around) / 2
        r["baseline_http_requests_per_s"] = round(ceiling, 1)
        r["baseline_measurements"] = [round(c, 1) for c, _ in around]
        r["ratio_steps_to_half_http_ceiling"] = round(r["steps_per_s"] / (ceiling / 2), 3)
        # the same ratio from CPU cost (what a quiet box would reach when CPU-bound)
        r["baseline_cpu_ms_per_request"] = round(request_cpu_ms, 3)
        r["cpu_ratio_two_requests_to_step"] = round(2 * request_cpu_ms / r["cpu_ms_per_step"], 3)
    paced = separate["end_to_end_paced"]
    return {"throughput": result, "throughput_complete_then_claim": separate,
            "baseline_stages": ceiling_stages, "floor_request": floor,
            # ten requests a run (a claim and a completion per step), one after another
            "paced_end_to_end_to_ten_floor_requests": round(
                paced["p50_ms"] / (10 * floor["p50_ms"]), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=1, help="steps per claim")
    parser.add_argument("--paced", type=int, default=30, help="runs timed with idle workers")
    parser.add_argument("--kill-runs", type=int, default=300, help="0 skips the kill -9 part")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument(
        "--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="workflows to run"
    )
    parser.add_argument("--out", default="workflows", help="results file name, no suffix")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet box")
    args = parser.parse_args()
    quiet = None if args.no_wait else round(wait_for_quiet(), 2)
    result = asyncio.run(run(args)) | {"load_before": quiet}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
