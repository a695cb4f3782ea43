"""Workflows across processes: the execution timeline, two services on one database,
``kill -9`` mid-run and a restart, a durable sleep that outlives its process, and
the SSE stream filtered by run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import psycopg
from live_http import SSEReader
from workflow_helpers import DIAMOND, compute, put_workflow, start, step, wait_for, work_until


async def test_run_execution_timeline_shows_each_completed_step(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    run = await start(client, h, await put_workflow(client, h, DIAMOND), {"n": 2})
    assert run["execution_id"] is not None
    done = await work_until(client, h, run["id"])
    eid = done["execution_id"]
    for _ in range(100):  # steps are appended just after their transitions commit
        execution = (await client.get(f"/v1/executions/{eid}", headers=h)).json()
        if execution["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert execution["status"] == "succeeded"
    timeline = (await client.get(f"/v1/executions/{eid}/steps", headers=h)).json()["items"]
    names = [s["name"] for s in timeline]
    assert [s["seq"] for s in timeline] == [1, 2, 3, 4, 5]
    assert names[0] == "a" and sorted(names[1:3]) == ["b", "c"] and names[3:] == ["d", "e"]
    state = (await client.get(f"/v1/executions/{eid}/state", headers=h)).json()["state"]
    assert state == {s["id"]: s["output"] for s in done["steps"]}


@contextlib.asynccontextmanager
async def service(database_url: str) -> AsyncIterator[tuple[str, Any]]:
    """``memory-service serve`` in its own OS process; yields its URL and the process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "MEMORY_DATABASE_URL": database_url,
        "MEMORY_EMBEDDING_MODEL": "hash:384", "MEMORY_LOG_LEVEL": "WARNING",
        "MEMORY_WORKFLOW_POLL_INTERVAL_S": "0.2", "MEMORY_SSE_HEARTBEAT_SECONDS": "0.5",
    }  # fmt: skip
    process = await anyio.open_process(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert process.returncode is None, "the service process exited"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/ready")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the service did not become ready"
                await asyncio.sleep(0.3)
        yield base, process
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.fail_after(30):
            await process.wait()
        await process.aclose()


class Workers:
    """Worker loops over HTTP that follow whichever services are up."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.bases: list[str] = []
        self.claimed: list[tuple[str, str]] = []  # (attempt id, run:step)
        self.recorded: Counter[str] = Counter()  # run:step -> accepted completions
        self.stop = False

    async def loop(self, index: int) -> None:
        async with httpx.AsyncClient(timeout=10, headers=self.headers) as http:
            while not self.stop:
                base = self.bases[index % len(self.bases)]
                try:
                    r = await http.post(f"{base}/v1/workers/claim", json={
                        "worker_id": f"w{index}", "queues": ["default"], "max_steps": 2,
                        "lease_s": 3, "wait_s": 0.5})  # fmt: skip
                    if r.status_code == 204:
                        continue
                    for a in r.json()["items"]:
                        self.claimed.append((a["id"], f"{a['run_id']}:{a['step_id']}"))
                        done = await http.post(
                            f"{base}/v1/workers/attempts/{a['id']}/complete",
                            json={"lease_token": a["lease_token"], "output": compute(a["input"])},
                        )
                        if done.status_code == 200:
                            self.recorded[f"{a['run_id']}:{a['step_id']}"] += 1
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)  # that service is gone; the others carry on


async def test_two_services_kill_9_and_restart(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    h = tenant["headers"]
    # a busy box can stall a worker past its short lease more than 3 times
    patient = {"max_attempts": 20, "backoff_s": 0.2, "max_backoff_s": 1}
    name = await put_workflow(
        client, h, {"steps": [{**s, "retry": patient} for s in DIAMOND["steps"]]}
    )
    nap = await put_workflow(client, h, {"steps": [
        {"id": "nap", "kind": "sleep", "input": {"seconds": 2}},
        {"id": "after", "kind": "memory.add", "depends_on": ["nap"],
         "input": {"content": "woke up after the restart"}}]})  # fmt: skip
    workers = Workers(h)
    async with (
        service(database_url) as (first, first_process),
        service(database_url) as (second, _),
        httpx.AsyncClient(timeout=30, headers=h) as http,
    ):
        runs = [await start(client, h, name, {"n": n}) for n in range(12)]
        slept = (await http.post(f"{first}/v1/workflows/{nap}/runs", json={})).json()
        async with http.stream(
            "GET", f"{second}/v1/events/stream", params={"workflow_run_id": runs[0]["id"]}
        ) as stream:
            reader = SSEReader(stream)
            workers.bases = [first, second]
            tasks = [asyncio.create_task(workers.loop(i)) for i in range(4)]
            deadline = time.monotonic() + 60
            while len(workers.recorded) < 20:
                assert time.monotonic() < deadline, f"only {len(workers.recorded)} steps done"
                assert not any(t.done() for t in tasks), "a worker loop ended early"
                await asyncio.sleep(0.05)
            os.kill(first_process.pid, signal.SIGKILL)  # mid-run, leases held on it
            workers.bases = [second]
            async with service(database_url) as (restarted, _):
                workers.bases = [second, restarted]
                for run in runs:
                    done = await wait_for(
                        client, h, run["id"], lambda r: r["status"] != "running", 60
                    )
                    assert done["status"] == "completed", done
                    assert done["output"] == {
                        "e": {"value": run["input"]["n"] * 2 + run["input"]["n"] ** 2}
                    }
                woke = await wait_for(
                    client, h, slept["id"], lambda r: r["status"] != "running", 30
                )
                assert woke["status"] == "completed" and step(woke, "after")["output"]["created"]
                workers.stop = True
                await asyncio.gather(*tasks)
            types = []
            deadline = time.monotonic() + 60
            while "workflow.run.completed" not in types:
                assert time.monotonic() < deadline, f"no run.completed event among {types}"
                event = await reader.next_event(10)
                assert event["attributes"]["workflow_run_id"] == runs[0]["id"]
                types.append(event["type"])
    # no step's output was accepted twice (a reply lost to the kill may hide one), and no
    # attempt went to two workers
    assert max(workers.recorded.values()) == 1 and len(workers.recorded) >= 12 * 5 - 8
    attempt_ids = [a for a, _ in workers.claimed]
    assert len(attempt_ids) == len(set(attempt_ids))
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM workflow_attempts "
            "WHERE run_id = ANY(%s::uuid[]) GROUP BY step_row", ([r["id"] for r in runs],),
        ).fetchall()  # fmt: skip
    assert len(rows) == 12 * 5 and all(completed == 1 for completed, _ in rows)
