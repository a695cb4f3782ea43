"""Fair sharing under a flood: one tenant's search latency while another floods search.

Starts ``memory-service serve`` from this tree (the packaged MiniLM model, its ONNX
export cached under ``benchmarks/.cache``) on an embedded PostgreSQL in a fresh data
directory, creates two tenants with ``--memories`` memories each, then, per scenario,
restarts the service under that scenario's limits and measures:

1. the victim's search p50/p95 alone (sequential searches with fresh query texts,
   paced at ``VICTIM_RATE`` per second so that it stays under every limit), the
   baseline of that scenario;
2. the flooder's solo throughput: ``wrk`` with 32 connections posting searches with
   random query texts (a Lua script), served (2xx) requests per second;
3. both at once: the victim measured again while the flood runs.

Beside the flooder's solo run it reads the service process's CPU time from ``/proc``
(PostgreSQL's processes apart): the cores the flood takes and the CPU milliseconds
per flood request, which, unlike latencies, other work on the box hardly moves. At the
end it restarts the service with a tenant rate of one request per 100 s and floods it
for 5 s, once answering refusals at once (``MEMORY_TENANT_QUEUE_WAIT_MS=0``) and once
paced as by default: the CPU per refusal (the idle process's taken off) and the cores
the refused flood takes.

Scenarios: ``served`` (no rate limit: the flood is served as fast as the box goes,
within the default in-flight share), ``refused`` (a low rate limit: most of the
flood is answered 429, which must cost far less than serving it), and, unless
``--quick``, ``no share`` (the in-flight share switched off, the rate limit too:
how the service behaved before it had one). Waits for a 1-minute load average under
1.5 first (``--no-wait`` skips that) and prints the load beside every number; the
box is shared, so only the ratios within a scenario mean much.

    python -m benchmarks.fairness_bench [--quick] [--no-wait] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks.common import (
    free_port,
    load_average,
    percentiles,
    serve_until_ready,
    stop_group,
    wait_for_quiet,
)
from memory_service.config import Settings
from memory_service.infra import db

ROOT = Path(__file__).resolve().parent.parent
EXPORT_DIR = ROOT / "benchmarks" / ".cache" / "onnx-export"
ADMIN = "bench-admin"
CONNECTIONS = 32
VICTIM_RATE = 20.0  # victim searches per second: under the refused scenario's limit
_VOCABULARY = (
    "memory agent search vector index tenant latency graph cache query embedding batch "
    "stream event worker claim queue workflow retry lease budget policy shard replica "
    "planner recall ranking keyword hybrid fusion score filter scope namespace user run "
    "note meeting project deadline travel invoice customer feedback design review plan"
)
WORDS = _VOCABULARY.split()
SCENARIOS: dict[str, dict[str, str]] = {
    "served": {"MEMORY_TENANT_REQUESTS_PER_SECOND": "0"},
    "refused": {
        "MEMORY_TENANT_REQUESTS_PER_SECOND": str(2 * VICTIM_RATE),
        "MEMORY_TENANT_REQUEST_BURST": str(int(2 * VICTIM_RATE)),
    },
    "no share": {"MEMORY_TENANT_REQUESTS_PER_SECOND": "0", "MEMORY_TENANT_MAX_IN_FLIGHT": "0"},
}
LUA = """
local words = {%(words)s}
math.randomseed(os.time())
request = function()
  local q = {}
  for i = 1, 6 do q[i] = words[math.random(#words)] end
  local body = '{"query": "' .. table.concat(q, " ") .. ' ' .. math.random(1, 1000000) .. '", "k": 10}'
  return wrk.format("POST", "/v1/memories/search", wrk.headers, body)
end
"""


@dataclass
class Flood:
    requests: int = 0
    refused: int = 0  # non-2xx answers (429s)
    seconds: float = 0.0

    @property
    def served_per_s(self) -> float:
        return (self.requests - self.refused) / self.seconds if self.seconds else 0.0

    @property
    def sent_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, all its threads (not PostgreSQL's processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def start(data_dir: Path, port: int, extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_ADMIN_TOKEN": ADMIN,
        "MEMORY_LOG_LEVEL": "WARNING",
        "MEMORY_EMBEDDING_EXPORT_DIR": str(EXPORT_DIR),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    return serve_until_ready(
        [sys.executable, "-m", "cli", "serve"], ROOT, env, port, data_dir / "service.log", 600
    )


def create_tenants(base: str, memories: int) -> dict[str, dict[str, str]]:
    rng = random.Random(7)
    tenants = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        for name in ("victim", "flooder"):
            r = http.post(
                "/v1/admin/tenants",
                json={"name": name},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            r.raise_for_status()
            headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
            tenants[name] = headers
            for start_at in tqdm(range(0, memories, 250), desc=f"loading {name}'s memories"):
                items = [{"content": sentence(rng)} for _ in range(min(250, memories - start_at))]
                http.post(
                    "/v1/memories/batch", json={"items": items}, headers=headers
                ).raise_for_status()
    return tenants


def victim_latencies(base: str, headers: dict[str, str], n: int, desc: str) -> dict[str, Any]:
    """``n`` sequential searches, each with a query text not seen before, paced."""
    rng = random.Random()
    times: list[float] = []
    codes: dict[int, int] = {}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        http.post("/v1/memories/search", json={"query": "warm up", "k": 10})
        for _ in tqdm(range(n), desc=desc, leave=False):
            body = {"query": f"{sentence(rng, 6)} {rng.randrange(10**9)}", "k": 10}
            started = time.perf_counter()
            r = http.post("/v1/memories/search", json=body)
            took = time.perf_counter() - started
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                times.append(took)
            time.sleep(max(0.0, 1 / VICTIM_RATE - took))
    return {**percentiles(times), "codes": codes}


def wrk(base: str, headers: dict[str, str], seconds: float, script: Path) -> subprocess.Popen[str]:
    command = [
        "wrk",
        "-t",
        "2",
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{seconds:.0f}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        "-H",
        f"Authorization: {headers['Authorization']}",
        "-H",
        "Content-Type: application/json",
        base,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc: subprocess.Popen[str]) -> Flood:
    out, _ = proc.communicate()
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", out)
    if done is None:
        raise RuntimeError(f"wrk said:\n{out}")
    unit = {"s": 1.0, "ms": 0.001, "m": 60.0}[done[3]]
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Flood(int(done[1]), int(refused[1]) if refused else 0, float(done[2]) * unit)


def scenario(
    name: str,
    data_dir: Path,
    tenants: dict[str, dict[str, str]],
    args: argparse.Namespace,
    script: Path,
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(data_dir, port, SCENARIOS[name])
    try:
        load = load_average()
        alone = victim_latencies(base, tenants["victim"], args.samples, f"{name}: victim alone")
        cpu = cpu_seconds(proc.pid)
        solo = wrk_result(wrk(base, tenants["flooder"], args.flood_seconds, script))
        cpu = cpu_seconds(proc.pid) - cpu
        flood_for = args.samples / VICTIM_RATE + 4
        flood = wrk(base, tenants["flooder"], flood_for, script)
        time.sleep(2)  # the flood is at full strength
        loaded_load = load_average()
        loaded = victim_latencies(
            base, tenants["victim"], args.samples, f"{name}: victim beside the flood"
        )
        beside = wrk_result(flood)
    finally:
        stop_group(proc)
    return {
        "scenario": name,
        "limits": SCENARIOS[name],
        "load_before": round(load, 2),
        "load_during_flood": round(loaded_load, 2),
        "victim_alone": alone,
        "victim_flooded": loaded,
        "p50_ratio": round(loaded["p50_ms"] / alone["p50_ms"], 2),
        "p95_ratio": round(loaded["p95_ms"] / alone["p95_ms"], 2),
        "flooder_solo": {
            **asdict(solo),
            "served_per_s": round(solo.served_per_s, 1),
            "sent_per_s": round(solo.sent_per_s, 1),
            # the service's CPU while only the flood ran: cores it took, ms per request
            "service_cpu_s": round(cpu, 3),
            "service_cores": round(cpu / solo.seconds, 2) if solo.seconds else None,
            "service_cpu_ms_per_request": round(1000 * cpu / solo.requests, 2)
            if solo.requests
            else None,
        },
        "flooder_beside_victim": {
            **asdict(beside),
            "served_per_s": round(beside.served_per_s, 1),
            "sent_per_s": round(beside.sent_per_s, 1),
        },
        "flooder_share": round(beside.served_per_s / solo.served_per_s, 2)
        if solo.served_per_s
        else None,
    }


def refusal_cost(data_dir: Path, script: Path, queue_wait_ms: str | None) -> dict[str, Any]:
    """The service's CPU per refusal: a tenant at a rate of one request per 100 s floods
    for ``--flood-seconds``; the process's idle CPU, measured just before, is taken off."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    limits = {"MEMORY_TENANT_REQUESTS_PER_SECOND": "0.01", "MEMORY_TENANT_REQUEST_BURST": "1"}
    if queue_wait_ms is not None:
        limits["MEMORY_TENANT_QUEUE_WAIT_MS"] = queue_wait_ms
    proc = start(data_dir, port, limits)
    try:
        r = httpx.post(
            f"{base}/v1/admin/tenants",
            json={"name": "refused"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        headers = {"Authorization": f"Bearer {r.json()['api_key']}"}
        httpx.get(f"{base}/v1/memories", headers=headers)  # the one token; the key now known
        before = cpu_seconds(proc.pid)
        time.sleep(3)
        idle_cores = (cpu_seconds(proc.pid) - before) / 3
        before = cpu_seconds(proc.pid)
        flood = wrk_result(wrk(base, headers, 5, script))
        cpu = cpu_seconds(proc.pid) - before - idle_cores * flood.seconds
    finally:
        stop_group(proc)
    return {
        "queue_wait_ms": queue_wait_ms or "default",
        "refused_per_s": round(flood.refused / flood.seconds, 1),
        "refused_share": round(flood.refused / max(1, flood.requests), 3),
        "service_cores": round(cpu / flood.seconds, 3),
        "cpu_ms_per_refusal": round(1000 * cpu / max(1, flood.requests), 3),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | load | victim p50 alone / flooded (ms) | ratio | victim p95 alone / flooded (ms) "
        "| ratio | flooder served/s solo / flooded (sent/s) | flooder share "
        "| service cores, CPU ms/request (flood alone) |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        a, f = r["victim_alone"], r["victim_flooded"]
        solo, beside = r["flooder_solo"], r["flooder_beside_victim"]
        lines.append(
            f"| {r['scenario']} | {r['load_before']} -> {r['load_during_flood']} "
            f"| {a['p50_ms']:.1f} / {f['p50_ms']:.1f} | {r['p50_ratio']}x "
            f"| {a['p95_ms']:.1f} / {f['p95_ms']:.1f} | {r['p95_ratio']}x "
            f"| {solo['served_per_s']} / {beside['served_per_s']} ({beside['sent_per_s']}) "
            f"| {r['flooder_share']} "
            f"| {solo['service_cores']}, {solo['service_cpu_ms_per_request']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer memories and samples, two scenarios"
    )
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet box")
    parser.add_argument(
        "--memories", type=int, help="memories per tenant (default 2000, quick 500)"
    )
    parser.add_argument(
        "--samples", type=int, help="victim searches per measurement (default 200, quick 60)"
    )
    parser.add_argument(
        "--flood-seconds", type=float, help="the flooder's solo run (default 10, quick 5)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.memories = args.memories or (500 if args.quick else 2000)
    args.samples = args.samples or (60 if args.quick else 200)
    args.flood_seconds = args.flood_seconds or (5 if args.quick else 10)
    if shutil.which("wrk") is None:
        sys.exit("fairness_bench needs wrk (apt-get install wrk)")
    names = ["served", "refused"] if args.quick else list(SCENARIOS)
    load = load_average() if args.no_wait else wait_for_quiet()
    print(f"1-minute load average at the start: {load:.2f} ({os.cpu_count()} CPUs)")
    data_dir = Path(tempfile.mkdtemp(prefix="fairness-bench-"))
    script = data_dir / "flood.lua"
    script.write_text(LUA % {"words": ", ".join(f'"{w}"' for w in WORDS)})
    rows = []
    try:
        port = free_port()
        proc = start(data_dir, port, {})
        try:
            tenants = create_tenants(f"http://127.0.0.1:{port}", args.memories)
        finally:
            stop_group(proc)
        for name in names:
            if not args.no_wait:
                wait_for_quiet()
            rows.append(scenario(name, data_dir, tenants, args, script))
        refusals = [refusal_cost(data_dir, script, wait) for wait in ("0", None)]
    finally:
        db.stop_embedded(Settings(data_dir=str(data_dir)))
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(table(rows))
    served = next(r["flooder_solo"] for r in rows if r["scenario"] == "served")
    print(
        f"\nservice CPU per served search (flood alone): {served['service_cpu_ms_per_request']} ms"
    )
    for r in refusals:
        print(
            f"refusals with MEMORY_TENANT_QUEUE_WAIT_MS={r['queue_wait_ms']}: {r['refused_per_s']}/s "
            f"from {CONNECTIONS} connections, {r['cpu_ms_per_refusal']} ms of service CPU each, "
            f"{r['service_cores']} cores in all"
        )
    print(
        "\ntarget: victim p50 within 2x and p95 within 3x of its baseline while the flood runs; "
        "the flooder keeps at least half of its solo throughput where it is served"
    )
    if args.json:
        args.json.write_text(json.dumps({"scenarios": rows, "refusals": refusals}, indent=2))


if __name__ == "__main__":
    main()
