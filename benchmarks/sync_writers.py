"""The exactly-once count of the sync benchmark: concurrent writers against feed readers.

Each writer works on its own entities, so it knows every version it commits: a
task goes through create (1), two updates (2, 3) and a delete (tombstone 4); a
memory through create (1), an update (2) and a delete (tombstone 3). Two readers
follow the feed meanwhile: an SSE stream on the other process (reconnecting
with Last-Event-ID if the connection drops) and a pager on ``GET /v1/changes``.
Every acknowledged change must reach each reader exactly once, and each
entity's changes must arrive in version order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
from tqdm import tqdm

Key = tuple[str, str, int, str]  # type, id, version, op


async def exactly_once(
    a: str, b: str, headers: dict[str, str], writers: int, seconds: float
) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(f"{a}/v1/changes", headers=headers)
        r.raise_for_status()
        start = r.json()["next_cursor"]
    acked: list[Key] = []
    errors: list[str] = []
    streamed: list[Key] = []
    paged: list[Key] = []
    done = asyncio.Event()
    reconnects = [0]
    progress = tqdm(desc=f"{writers} writers x {seconds:.0f} s", unit=" changes")
    deadline = time.monotonic() + seconds
    readers = [
        asyncio.create_task(_stream(b, headers, start, streamed, acked, done, reconnects)),
        asyncio.create_task(_pager(a, headers, start, paged, acked, done)),
    ]
    await asyncio.gather(
        *(_writer(a, headers, n, deadline, acked, errors, progress) for n in range(writers))
    )
    progress.close()
    done.set()
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    return {
        "writers": writers,
        "seconds": seconds,
        "acknowledged": len(acked),
        "write_errors": len(errors),
        "changes_per_s": round(len(acked) / seconds),
        "stream_reconnects": reconnects[0],
        "readers": {
            "SSE stream on B": check(acked, streamed),
            "GET /v1/changes pages on A": check(acked, paged),
        },
    }


def check(acked: list[Key], got: list[Key]) -> dict[str, int]:
    want, have = Counter(acked), Counter(got)
    last: dict[str, int] = defaultdict(int)
    out_of_order = 0
    for _, entity_id, version, _ in got:
        if version <= last[entity_id]:
            out_of_order += 1
        last[entity_id] = version
    return {
        "received": len(got),
        "missing": sum((want - have).values()),
        "duplicated": sum(n - 1 for n in have.values() if n > 1),
        "unexpected": sum((have - want).values()),
        "out_of_order": out_of_order,
    }


async def _writer(
    base: str,
    headers: dict[str, str],
    n: int,
    deadline: float,
    acked: list[Key],
    errors: list[str],
    progress: tqdm[Any],
) -> None:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                done = await _task_life(http, f"w{n}-{i}") + await _memory_life(http, f"w{n}-{i}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            acked.extend(done)
            progress.update(len(done))


async def _task_life(http: httpx.AsyncClient, name: str) -> list[Key]:
    r = (await http.post("/v1/tasks", json={"title": name})).raise_for_status()
    tid = r.json()["id"]
    out: list[Key] = [("task", tid, 1, "upsert")]
    for version, status in ((2, "in_progress"), (3, "completed")):
        r = await http.patch(f"/v1/tasks/{tid}", json={"status": status})
        r.raise_for_status()
        out.append(("task", tid, version, "upsert"))
    (await http.delete(f"/v1/tasks/{tid}")).raise_for_status()
    return [*out, ("task", tid, 4, "delete")]


async def _memory_life(http: httpx.AsyncClient, name: str) -> list[Key]:
    r = (await http.post("/v1/memories", json={"content": f"note {name}"})).raise_for_status()
    mid = r.json()["id"]
    (await http.patch(f"/v1/memories/{mid}", json={"metadata": {"n": name}})).raise_for_status()
    (await http.delete(f"/v1/memories/{mid}")).raise_for_status()
    return [
        ("memory", mid, 1, "upsert"),
        ("memory", mid, 2, "upsert"),
        ("memory", mid, 3, "delete"),
    ]


def _key(item: dict[str, Any]) -> Key:
    return (item["type"], item["id"], item["version"], item["op"])


async def _stream(
    base: str,
    headers: dict[str, str],
    cursor: str,
    got: list[Key],
    acked: list[Key],
    done: asyncio.Event,
    reconnects: list[int],
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=30)) as http:
        while not (done.is_set() and len(got) >= len(acked)):
            try:
                async with http.stream(
                    "GET",
                    f"{base}/v1/changes/stream",
                    headers={**headers, "Last-Event-ID": cursor},
                ) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            item = json.loads(line[6:])
                            got.append(_key(item))
                            cursor = item["cursor"]
                        if done.is_set() and len(got) >= len(acked):
                            return
            except httpx.HTTPError:
                reconnects[0] += 1
                await asyncio.sleep(0.2)


async def _pager(
    base: str,
    headers: dict[str, str],
    cursor: str,
    got: list[Key],
    acked: list[Key],
    done: asyncio.Event,
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        while not (done.is_set() and len(got) >= len(acked)):
            r = await http.get(
                f"{base}/v1/changes", params={"since": cursor, "limit": 1000}, headers=headers
            )
            r.raise_for_status()
            page = r.json()
            got.extend(_key(item) for item in page["items"])
            cursor = page["next_cursor"]
            if not page["has_more"]:
                await asyncio.sleep(0.05)
