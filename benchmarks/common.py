"""Helpers shared by the search benchmark: data, timing, memory, a real server, output.

Synthetic vectors are clustered in a low-dimensional subspace (as real sentence
embeddings are) and normalised; SciFact documents come from the data directory
(never copied into the repository). ``ServiceProcess`` runs ``memory-service
serve`` under uvicorn on 127.0.0.1 against an existing database.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

ADMIN_TOKEN = "bench-admin-token"
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}


def client_blas_on_one_thread() -> threadpool_limits:
    """Limit this (client) process's BLAS to one thread, at once or as a context manager.
    A benchmark's ground truth multiplies up to every loaded vector: on two BLAS threads
    the idle one spins on a core for about 0.1 s after each product, beside the service
    being timed."""
    return threadpool_limits(1, user_api="blas")


def parse_size(text: str) -> int:
    key = text.strip().lower()
    if key in SIZES:
        return SIZES[key]
    return int(float(key.rstrip("kK")) * (1000 if key.endswith("k") else 1))


def synthetic_vectors(n: int, seed: int, dim: int = 384, clusters: int = 500) -> np.ndarray:
    """Unit vectors in clusters on a 32-dimensional subspace, plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1).standard_normal((32, dim)) / np.sqrt(32)
    centres = np.random.default_rng(2).standard_normal((clusters, 32))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, 32))
        x = z @ basis + 0.05 * rng.standard_normal((m, dim))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def read_scifact(data_dir: Path, limit: int) -> tuple[list[str], list[str]]:
    """(documents, queries) of SciFact; documents are 'title. text', cut to 2,000 chars."""
    docs: list[str] = []
    with (data_dir / "scifact" / "corpus.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            docs.append(f"{row['title']}. {row['text']}"[:2000])
            if len(docs) >= limit:
                break
    queries = []
    with (data_dir / "scifact" / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for line in f]
    return docs, queries


def percentiles(samples_s: Iterable[float]) -> dict[str, float]:
    values = np.asarray(list(samples_s), dtype=np.float64) * 1000.0
    if not len(values):
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
    }


def recall_at_k(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return round(hits / max(1, sum(len(t) for t in truth)), 4)


def rss_mb(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "note": "shared CPU box; other work ran beside the benchmark",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# the per-tenant rate and in-flight share off: a capacity benchmark is one tenant
# pushing as hard as it can, which those limits exist to refuse
UNLIMITED_TENANT = {"MEMORY_TENANT_REQUESTS_PER_SECOND": "0", "MEMORY_TENANT_MAX_IN_FLIGHT": "0"}


class ServiceProcess:
    """``memory-service serve`` on 127.0.0.1 against ``database_url``; killed on exit."""

    def __init__(self, database_url: str, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MEMORY_DATABASE_URL": database_url,
            "MEMORY_DATA_DIR": str(data_dir),
            "MEMORY_ADMIN_TOKEN": ADMIN_TOKEN,
            "MEMORY_EMBEDDING_MODEL": "hash:384",  # queries carry their own vectors
            "MEMORY_LOG_LEVEL": "WARNING",
            "MEMORY_FAISS_SNAPSHOT_INTERVAL_S": "3600",
            "HF_HUB_OFFLINE": "1",
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for /ready; returns the seconds it took."""
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while time.monotonic() - started < 600:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the service did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


_STAGE_LINE = re.compile(
    r'memory_http_request_stage_seconds_(count|sum)\{method="(\w+)",route="([^"]*)",'
    r'stage="(\w+)"\} ([0-9.e+-]+)'
)
StageTotals = dict[str, dict[str, list[float]]]


async def stage_seconds(http: httpx.AsyncClient) -> StageTotals:
    """The service's per-stage timing so far: ``"METHOD route" -> stage -> [count, seconds]``."""
    return parse_stages((await http.get("/metrics")).text)


def stage_seconds_sync(http: httpx.Client) -> StageTotals:
    return parse_stages(http.get("/metrics").text)


def parse_stages(text: str) -> StageTotals:
    found: StageTotals = {}
    for kind, method, route, stage, value in _STAGE_LINE.findall(text):
        totals = found.setdefault(f"{method} {route}", {}).setdefault(stage, [0.0, 0.0])
        totals[0 if kind == "count" else 1] = float(value)
    return found


def stage_delta(before: StageTotals, after: StageTotals) -> dict[str, dict[str, float]]:
    """Mean milliseconds per request in each stage between two ``stage_seconds`` readings,
    for every route that served requests in between (``requests``: how many)."""
    out: dict[str, dict[str, float]] = {}
    for operation, stages in after.items():
        earlier = before.get(operation, {})
        counts = {s: v[0] - earlier.get(s, [0.0, 0.0])[0] for s, v in stages.items()}
        requests = counts.get("other", 0.0)
        if requests <= 0:
            continue
        out[operation] = {"requests": requests}
        for stage, (_, seconds) in stages.items():
            spent = seconds - earlier.get(stage, [0.0, 0.0])[1]
            out[operation][stage] = round(spent / requests * 1000.0, 3)
    return out


def stage_table(stages: dict[str, dict[str, float]], operations: Iterable[str]) -> list[str]:
    """Markdown rows: mean ms per request and stage for ``operations``."""
    names = ("parse", "auth", "admission", "database", "index", "serialise", "other")
    rows = [
        "| operation | requests | " + " | ".join(f"{n} ms" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for operation in operations:
        found = stages.get(operation)
        if found is None:
            continue
        cells = " | ".join(str(found.get(n, 0.0)) for n in names)
        rows.append(f"| {operation} | {int(found['requests'])} | {cells} |")
    return rows


def serve_until_ready(
    command: list[str], cwd: Path, env: dict[str, str], port: int, log_path: Path, timeout_s: float
) -> subprocess.Popen[bytes]:
    """``memory-service serve`` in a process group of its own, returned once ``/ready``
    answers 200; its stderr goes to ``log_path``."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited; see {log_path}")
        time.sleep(0.1)
    raise RuntimeError(f"the service did not become ready in {timeout_s:.0f} s")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the service's process group, SIGKILL after 60 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(limit: float = 1.5, timeout: float = 300.0) -> float:
    """Wait (up to ``timeout`` s) for a 1-minute load average under ``limit``; the load then.
    The box is shared: a measurement taken while others work says little."""
    started = time.monotonic()
    with tqdm(desc=f"waiting for load < {limit}", bar_format="{desc} {elapsed}") as bar:
        while (load := load_average()) >= limit and time.monotonic() - started < timeout:
            bar.set_description(f"waiting for load < {limit} (now {load:.2f})")
            time.sleep(5)
    load = load_average()
    print(f"load average before measuring: {load:.2f}" + ("" if load < limit else " (not quiet)"))
    return load


def load_text() -> str:
    """The 1-, 5- and 15-minute load averages, as text for a report."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
