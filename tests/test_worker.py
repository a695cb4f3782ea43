"""``Worker`` runs workflow task steps: heartbeats a short lease, completes, fails, and
stops on SIGTERM only after finishing the attempt in hand."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from memory_service_client import MemoryClient
from memory_service_client.worker import NonRetryable, Worker

from tests.conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent

WORKER_PROCESS = """
import sys, time
from pathlib import Path
from memory_service_client import MemoryClient
from memory_service_client.worker import Worker
url, key, queue, marker = sys.argv[1:5]
worker = Worker(MemoryClient(url, key), lease_s=1.0, wait_s=1.0)

@worker.task(queue)
def slow(payload):
    Path(marker).write_text("started")
    time.sleep(3)  # three times the lease: only heartbeats keep it
    return {"v": payload["n"] * 2}

worker.run()
print("completed", worker.completed)
"""


@pytest.fixture
def client(live_url: str) -> Iterator[MemoryClient]:
    with MemoryClient(live_url, admin_token=ADMIN_TOKEN) as admin:
        key = admin.create_tenant(f"worker-{uuid.uuid4().hex[:6]}")["api_key"]
    with MemoryClient(live_url, key) as tenant_client:
        yield tenant_client


def _workflow(client: MemoryClient, steps: list[dict]) -> str:
    name = f"wf-{uuid.uuid4().hex[:6]}"
    client.put_workflow(name, {"steps": steps})
    return name


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sigterm_finishes_the_attempt_in_hand_and_a_new_worker_carries_on(
    live_url: str, client: MemoryClient, tmp_path: Path
) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    name = _workflow(client, [
        {"id": "first", "kind": "task", "queue": queue, "input": {"n": {"$ref": "input.n"}}},
        {"id": "second", "kind": "task", "queue": queue, "depends_on": ["first"],
         "input": {"n": {"$ref": "steps.first.output.v"}}},
    ])
    run = client.start_run(name, {"n": 3})
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_PROCESS, live_url, client._http.headers["Authorization"][7:],
         queue, str(marker)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(marker.exists)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and "completed 1" in out
    steps = {s["id"]: s for s in client.get_run(run["id"])["steps"]}
    assert steps["first"]["status"] == "completed" and steps["first"]["output"] == {"v": 6}
    assert steps["first"]["attempts"] == 1  # the lease outlived 3 s of work on a 1 s lease
    assert steps["second"]["status"] in ("ready", "pending")

    worker = Worker(client, lease_s=5.0, wait_s=1.0)
    worker.task(queue)(lambda payload: {"v": payload["n"] * 2})
    worker.run(handle_signals=False, max_attempts=1)
    _wait_for(lambda: client.get_run(run["id"])["status"] == "completed")
    assert client.get_run(run["id"])["output"]["second"] == {"v": 12}


def test_a_non_retryable_error_fails_the_run_at_once(client: MemoryClient) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    name = _workflow(client, [
        {"id": "only", "kind": "task", "queue": queue, "retry": {"max_attempts": 5}},
    ])
    run = client.start_run(name, {})
    worker = Worker(client, lease_s=5.0, wait_s=1.0)

    @worker.task(queue)
    def refuse(payload: object) -> None:
        raise NonRetryable("the input names no document")

    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False, "max_attempts": 1})
    thread.start()
    thread.join(60)
    _wait_for(lambda: client.get_run(run["id"])["status"] == "failed")
    (step,) = client.get_run(run["id"])["steps"]
    assert step["attempts"] == 1 and "no document" in str(step["error"])
    assert worker.failed == 1
