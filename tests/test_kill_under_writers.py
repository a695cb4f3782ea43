"""``kill -9`` of a real service under 8 concurrent writers loses no acknowledged write.

Eight threads add memories as fast as the service answers and remember every id
acknowledged with 201. The process is killed with SIGKILL mid-stream and started
again on the same database: every acknowledged memory is there, and the rebuilt
FAISS index answers each one's own vector with that memory, exactly as the
database does.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN
from tests.helpers import unit_vectors
from tests.test_hot_search import free_port, start_service

pytestmark = pytest.mark.slow
WRITERS = 8


def test_kill_9_under_eight_writers_loses_no_acknowledged_write(database_url: str, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    vecs = unit_vectors(WRITERS * 400, seed=23)
    process = start_service(database_url, tmp_path / "data", port, log)
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/v1/admin/tenants", json={"name": "kill-9"}, headers=ADMIN)
        h = {"Authorization": f"Bearer {r.json()['api_key']}"}

    def writer(w: int) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(w, len(vecs), WRITERS):
                if stop.is_set():
                    return
                try:
                    r = http.post("/v1/memories", json={"content": f"w{w} #{i}", "embedding": vecs[i].tolist()}, headers=h)
                except httpx.HTTPError:
                    return  # the process died mid-request: not acknowledged
                if r.status_code == 201:
                    with lock:
                        acknowledged[r.json()["id"]] = i

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 50, len(acknowledged)

    process = start_service(database_url, tmp_path / "data", port, log)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            for memory_id, i in acknowledged.items():
                assert http.get(f"/v1/memories/{memory_id}", headers=h).status_code == 200, memory_id
                body = http.post("/v1/memories/search", json={"embedding": vecs[i].tolist(), "k": 1}, headers=h).json()
                # the rebuilt FAISS index answers, not the pgvector fallback
                assert body["strategy"] == "faiss", body["strategy"]
                assert body["results"][0]["memory"]["id"] == memory_id, i
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
