"""A real service for the evaluation: uvicorn on 127.0.0.1 in a temporary data directory.

``RunningService`` starts ``memory-service serve`` as a subprocess with its own
embedded PostgreSQL and admin token, waits for ``/ready``, and stops it (and
removes the data) on exit. ``TenantClient`` speaks the public HTTP API only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningService:
    def __init__(self, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="memory-eval-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "service.log"

    def __enter__(self) -> Self:
        env = {
            **os.environ,
            "MEMORY_DATA_DIR": str(self.data_dir / "data"),
            "MEMORY_ADMIN_TOKEN": self.admin_token,
            "MEMORY_HOST": "127.0.0.1",
            "MEMORY_PORT": str(self.port),
            "MEMORY_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **self.extra_env,
        }
        log = open(self.log_path, "wb")  # closed when the process ends
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError("the service did not become ready in 300 s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if exc_type is not None and self.log_path.exists():
            tail = self.log_path.read_text(errors="replace").splitlines()[-60:]
            print("service log (last lines):", *tail, sep="\n", file=sys.stderr)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def default_mode(self) -> str:
        """What the service answers a search that names no mode with: the strategy of a
        probe search in a tenant of its own, without the index names
        ("hybrid(faiss+keyword-hot)+context(run_id)+learned" ->
        "hybrid+context(run_id)+learned")."""
        probe = self.new_tenant("default-mode-probe")
        probe.http.post("/v1/memories", json={"content": "a probe for the default mode"})
        strategy = str(probe.search({"query": "probe", "k": 1}).get("strategy", "?"))
        return re.sub(r"^(\w+)\([^)]*\)", r"\1", strategy)

    def new_tenant(self, name: str) -> TenantClient:
        r = httpx.post(
            f"{self.base_url}/v1/admin/tenants",
            json={"name": name},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        r.raise_for_status()
        return TenantClient(self.base_url, r.json()["api_key"])


class TenantClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=300,
            limits=httpx.Limits(max_connections=8),
        )

    def add_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        r = self.http.post("/v1/memories/batch", json={"items": items})
        if r.status_code != 201:
            raise RuntimeError(f"batch add failed: {r.status_code} {r.text[:500]}")
        return list(r.json()["items"])

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/v1/memories/search", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"search failed: {r.status_code} {r.text[:500]}")
        return dict(r.json())
