"""``wrk`` (a C load generator) against the service: requests/s and latency percentiles.

A Python client on a 2-core box measures itself as much as the server; ``wrk``
spends almost nothing per request, so its rates are the service's. Requests with
bodies rotate through prepared ones with a small Lua script.

    rate = run_wrk(port, "/health")
    rate = run_wrk(port, "/v1/memories/search", bodies=[...], headers={...})
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(bodies: list[Any], headers: dict[str, str]) -> str:
    # long brackets hold any JSON text as it is ([==[ ... ]==] never occurs in it)
    lines = ["bodies = {" + ",".join(f"[==[{json.dumps(b)}]==]" for b in bodies) + "}"]
    lines += ["i = 0", 'wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += [
        "request = function()",
        "  i = i % #bodies + 1",
        "  return wrk.format(nil, nil, nil, bodies[i])",
        "end",
    ]
    return "\n".join(lines) + "\n"


def run_wrk(
    port: int,
    path: str,
    *,
    bodies: list[Any] | None = None,
    headers: dict[str, str] | None = None,
    connections: int = 16,
    threads: int = 2,
    seconds: float = 10.0,
) -> dict[str, float]:
    """Requests/s (all, and ``served_per_s`` answered 2xx), p50 and p99 (ms) and the
    non-2xx answers of one ``wrk`` run."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    with tempfile.TemporaryDirectory() as tmp:
        if bodies:
            script = Path(tmp) / "bodies.lua"
            script.write_text(_lua(bodies, headers or {}))
            cmd += ["-s", str(script)]
        else:
            for k, v in (headers or {}).items():
                cmd += ["-H", f"{k}: {v}"]
        out = subprocess.run(
            [*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
        ).stdout
    return parse(out)


def parse(out: str) -> dict[str, float]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    result = {"per_s": float(rate.group(1)), "non_2xx": 0.0}
    for q in ("50", "99"):
        found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found:
            result[f"p{q}_ms"] = round(float(found.group(1)) * UNITS[found.group(2)], 3)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        result["non_2xx"] = float(bad.group(1))
    total = re.search(r"(\d+) requests in", out)
    share = 1.0 - result["non_2xx"] / float(total.group(1)) if total else 1.0
    result["served_per_s"] = round(result["per_s"] * share, 1)  # answered 2xx
    return result
