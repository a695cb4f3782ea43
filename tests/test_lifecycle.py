"""The process lifecycle of a real ``memory-service serve`` and its embedded PostgreSQL.

SIGTERM and Ctrl-C (SIGINT) stop the embedded server with the last service process
on a data directory; after ``kill -9`` the next start adopts the orphaned server and
stops it when it exits; ``memory-service stop`` stops a data directory's service and
database. Every check looks for a live postmaster of that data directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import server_data_dir

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postmasters(data_dir: Path) -> list[psutil.Process]:
    pgdata = str((data_dir / "pg").resolve())
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and pgdata in cmd:
            found.append(proc)
    return found


def environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORY_")}
    env.update(MEMORY_DATA_DIR=str(data_dir), MEMORY_EMBEDDING_MODEL="hash:384", HF_HUB_OFFLINE="1")
    return env


def serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (data_dir / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env=environment(data_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (data_dir / f"serve-{port}.log").read_text()
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("service did not become ready")


def wait_gone(data_dir: Path, seconds: float = 20) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := postmasters(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def data_dir() -> object:
    # outside pytest's temporary root, which another test session on the machine can
    # close to the embedded server's own user (see ``server_data_dir``)
    path = server_data_dir("lifecycle")
    yield path
    for proc in postmasters(path):  # never leave a server behind, even on failure
        proc.kill()
    shutil.rmtree(path, ignore_errors=True)


def test_sigterm_stops_the_embedded_database(data_dir: Path) -> None:
    proc, base = serve(data_dir)
    output = (data_dir / f"serve-{base.rsplit(':', 1)[1]}.log").read_text()
    assert "Successful postgres command" not in output and "initdb" not in output, output
    assert postmasters(data_dir), "the embedded PostgreSQL should run while serving"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert wait_gone(data_dir) == []


def test_kill_9_orphan_is_adopted_and_ctrl_c_stops_it(data_dir: Path) -> None:
    proc, _ = serve(data_dir)
    orphan = [p.pid for p in postmasters(data_dir)]
    assert len(orphan) == 1, f"one embedded PostgreSQL should serve {data_dir}, found {orphan}"
    proc.kill()
    proc.wait(timeout=30)
    assert [p.pid for p in postmasters(data_dir)] == orphan, "kill -9 leaves the server running"
    proc, _ = serve(data_dir)
    assert [p.pid for p in postmasters(data_dir)] == orphan, "the next start adopts it"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert wait_gone(data_dir) == []


def test_two_services_share_and_the_last_one_stops_it(data_dir: Path) -> None:
    a, _ = serve(data_dir)
    b, base_b = serve(data_dir)
    a.send_signal(signal.SIGTERM)
    a.wait(timeout=60)
    assert postmasters(data_dir), "the other service still uses the database"
    assert httpx.get(f"{base_b}/ready", timeout=10).status_code == 200
    stopped = subprocess.run(
        [sys.executable, "-m", "cli", "stop"],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert stopped.returncode == 0, stopped.stderr
    # it says what it stopped: the service, and the PostgreSQL that went with it
    assert f"stopped service process (pid {b.pid})" in stopped.stdout, stopped.stdout
    assert "PostgreSQL" in stopped.stdout and "no PostgreSQL" not in stopped.stdout, stopped.stdout
    b.wait(timeout=30)
    assert wait_gone(data_dir) == []
