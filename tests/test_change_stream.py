"""The live change stream: served by another OS process, fed by writes through this one,
delivered exactly once across reconnects with Last-Event-ID, and confined to the tenant."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import new_tenant
from tests.live_http import SSEReader, service_process

Client = AsyncTestClient[Litestar]


async def make_tasks(client: Client, headers: dict[str, str], titles: list[str]) -> list[str]:
    # concurrent writers, so commits interleave
    responses = await asyncio.gather(
        *(client.post("/v1/tasks", json={"title": t}, headers=headers) for t in titles)
    )
    assert all(r.status_code == 201 for r in responses)
    return [r.json()["id"] for r in responses]


async def read(reader: SSEReader, n: int) -> list[dict[str, Any]]:
    return [await reader.next_event(timeout=20) for _ in range(n)]


async def test_stream_across_processes_is_exactly_once_over_reconnects(
    client: Client, database_url: str
) -> None:
    tenant, other = await new_tenant(client), await new_tenant(client)
    h = tenant["headers"]
    created: list[str] = []
    got: list[dict[str, Any]] = []
    before = await make_tasks(client, h, ["before the stream opened"])  # streams start at now
    async with service_process(database_url) as base, httpx.AsyncClient(timeout=30) as http:
        url = f"{base}/v1/changes/stream"
        async with http.stream("GET", url, params={"types": "task"}, headers=h) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SSEReader(response)
            await make_tasks(client, other["headers"], ["not yours"])
            created += await make_tasks(client, h, [f"a{i}" for i in range(12)])
            got += await read(reader, 5)
        for round_ in range(3):
            # disconnected: these commit while nobody listens
            created += await make_tasks(client, h, [f"r{round_}-{i}" for i in range(8)])
            resume = {**h, "Last-Event-ID": got[-1]["sse_id"]}
            async with http.stream("GET", url, headers=resume) as response:
                reader = SSEReader(response)
                got += await read(reader, 4 if round_ < 2 else len(created) - len(got))
                if round_ == 2:
                    with pytest.raises(TimeoutError):  # nothing left: heartbeats only
                        await reader.next_event(timeout=1.5)
                    assert "heartbeat" in reader.comments
        ids = [e["id"] for e in got]
        assert len(ids) == len(set(ids)) == len(created)
        assert set(ids) == set(created)
        assert all(e["sse_id"] == e["cursor"] and e["type"] == "task" for e in got)
        # what the stream sent is the feed's order, item for item
        page = (await client.get("/v1/changes", params={"types": "task"}, headers=h)).json()
        assert [c["id"] for c in page["items"]] == before + ids
