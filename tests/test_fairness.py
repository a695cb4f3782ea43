"""Fair sharing: a tenant at its limits gets 429s and does not slow another tenant down.

A real uvicorn server with small per-tenant limits: requests per second (429 with
``Retry-After``), concurrent event streams, bytes per request. The last test holds
one tenant at every limit (all its streams open, requests sent at twice its rate
so that half are refused) and compares another tenant's median latency with and
without that load. The load comes from this process, like the server's: a client
that ignores 429s and floods would measure the shared CPU, not the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from memory_service.config import Settings
from tests.conftest import assert_problem, new_tenant
from tests.live_http import serve

STREAMS = 4
RATE = 5  # requests per second and tenant: far below what the server can do


@pytest.fixture(scope="module")
async def limited(settings: Settings, database_url: str) -> AsyncIterator[str]:
    tight = settings.with_(
        database_url=database_url,
        tenant_requests_per_second=RATE,
        tenant_request_burst=2 * RATE,
        tenant_max_streams=STREAMS,
        tenant_max_request_bytes=64 * 1024,
    )
    async with serve(tight) as base:
        yield base


async def test_rate_limit_is_per_tenant_with_retry_after(client: Any, limited: str) -> None:
    a, b = await new_tenant(client), await new_tenant(client)
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        answers = await asyncio.gather(
            *[http.get("/v1/memories", headers=a["headers"]) for _ in range(30)]
        )
        codes = [r.status_code for r in answers]
        assert codes.count(200) >= RATE and codes.count(429) >= 10, codes
        refused = next(r for r in answers if r.status_code == 429)
        assert_problem(refused, 429, mentions="per second")
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await http.get("/v1/memories", headers=b["headers"])).status_code == 200
        big = {"content": "x" * (70 * 1024)}
        r = await http.post("/v1/memories", json=big, headers=b["headers"])
        assert_problem(r, 413, mentions="bytes")


@contextlib.asynccontextmanager
async def open_streams(http: httpx.AsyncClient, headers: dict[str, str], n: int) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            response = await stack.enter_async_context(
                http.stream("GET", "/v1/events/stream", headers=headers)
            )
            assert response.status_code == 200
        yield


async def test_event_streams_are_bounded_per_tenant(client: Any, limited: str) -> None:
    a, b = await new_tenant(client), await new_tenant(client)
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        async with open_streams(http, a["headers"], STREAMS):
            r = await http.get("/v1/events/stream", headers=a["headers"])
            assert_problem(r, 429, mentions="stream")
            async with open_streams(http, b["headers"], 1):
                pass
        # the slots came back when the streams closed
        await asyncio.sleep(0.2)
        async with open_streams(http, a["headers"], STREAMS):
            pass


async def median_latency_ms(http: httpx.AsyncClient, headers: dict[str, str], n: int = 16) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = await http.get("/v1/memories", params={"limit": 10}, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
        await asyncio.sleep(1.2 / RATE)  # stay under this tenant's own rate
    return statistics.median(times)


async def test_a_tenant_at_its_limits_does_not_slow_another(client: Any, limited: str) -> None:
    noisy, quiet = await new_tenant(client), await new_tenant(client)
    stop = asyncio.Event()
    refused = 0

    async def hammer(http: httpx.AsyncClient) -> None:
        # two of these send twice the tenant's rate: it runs at its limit, half refused
        nonlocal refused
        while not stop.is_set():
            r = await http.get("/v1/memories", params={"limit": 10}, headers=noisy["headers"])
            refused += r.status_code == 429
            await asyncio.sleep(1 / RATE)

    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        await http.post("/v1/memories", json={"content": "quiet tenant's note"}, headers=quiet["headers"])
        await median_latency_ms(http, quiet["headers"], 3)  # warm up
        alone = await median_latency_ms(http, quiet["headers"])
        async with open_streams(http, noisy["headers"], STREAMS):
            workers = [asyncio.create_task(hammer(http)) for _ in range(2)]
            await asyncio.sleep(0.5)
            loaded = await median_latency_ms(http, quiet["headers"])
            stop.set()
            await asyncio.gather(*workers)
    print(f"quiet tenant p50 alone {alone:.1f} ms, beside a tenant at its limits {loaded:.1f} ms")
    assert refused > 0, "the noisy tenant never reached its rate limit"
    assert loaded <= 2 * alone, (alone, loaded)
