"""Fair sharing: a tenant at its limits gets 429s and does not hold up another tenant.

A real uvicorn server with small limits: requests per second, requests in flight
(with a short queue), event streams and long polls per tenant, bytes per request,
and a share per client address for requests without a valid key. A request is held
"in flight" by sending its body slowly: the server admitted it on its headers and
waits for the rest. The counts the tests wait for are read from the server's own
limiter (it runs in this event loop); latencies belong in
``benchmarks/fairness_bench.py``, so the one check of speed here is a deadline
with a wide margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.infra.fairness import FairThread, TenantLimiter
from tests.conftest import assert_problem, new_tenant
from tests.live_http import serve

STREAMS = 4
RATE = 5  # requests per second and tenant: far below what the server can do
IN_FLIGHT = 2
LONG_POLLS = 2
QUEUE_WAIT_MS = 200


@pytest.fixture(scope="module")
async def server(settings: Settings, database_url: str) -> AsyncIterator[tuple[str, Litestar]]:
    tight = settings.with_(
        database_url=database_url,
        tenant_requests_per_second=RATE,
        tenant_request_burst=2 * RATE,
        tenant_max_in_flight=IN_FLIGHT,
        tenant_queue_wait_ms=QUEUE_WAIT_MS,
        tenant_max_streams=STREAMS,
        tenant_max_long_polls=LONG_POLLS,
        tenant_max_request_bytes=64 * 1024,
        anonymous_requests_per_second=RATE,
        anonymous_request_burst=RATE,
        anonymous_max_in_flight=IN_FLIGHT,
    )
    app = create_app(tight, embedder=HashEmbedder(384))
    async with serve(tight, app=app) as base:
        yield base, app


@pytest.fixture
def limited(server: tuple[str, Litestar]) -> str:
    return server[0]


@pytest.fixture
def limiter(server: tuple[str, Litestar]) -> TenantLimiter:
    limiter: TenantLimiter = server[1].state.runtime.limiter
    return limiter


async def known_tenant(client: Any, http: httpx.AsyncClient) -> dict[str, Any]:
    """A tenant whose key the server has seen once (its first request is looked up)."""
    tenant = await new_tenant(client)
    assert (await http.get("/v1/memories", headers=tenant["headers"])).status_code == 200
    return tenant


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never reached the expected state"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def held_in_flight(
    http: httpx.AsyncClient, tenant: dict[str, Any], limiter: TenantLimiter, n: int
) -> AsyncIterator[None]:
    """``n`` requests of ``tenant`` admitted and waiting for the rest of their bodies."""
    go = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"content": "sent '
        await go.wait()
        yield f'slowly {uuid.uuid4()}"}}'.encode()

    headers = {**tenant["headers"], "Content-Type": "application/json"}
    tid = uuid.UUID(tenant["id"])
    before = limiter.in_flight(tid)
    posts = [
        asyncio.create_task(http.post("/v1/memories", content=slow_body(), headers=headers))
        for _ in range(n)
    ]
    await until(lambda: limiter.in_flight(tid) == before + n)
    try:
        yield
    finally:
        go.set()
        answers = await asyncio.gather(*posts)
    assert [r.status_code for r in answers] == [201] * n, [r.text for r in answers]


async def test_rate_limit_is_per_tenant_with_retry_after(client: Any, limited: str) -> None:
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        a, b = await known_tenant(client, http), await known_tenant(client, http)
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
        scraped = (await http.get("/metrics")).text
        counted = re.search(r'memory_requests_refused_total\{limit="rate"\} (\d+)', scraped)
        assert counted and int(counted[1]) >= 10, scraped[:2000]


async def test_a_tenant_over_its_in_flight_share_waits_then_gets_429(
    client: Any, limited: str, limiter: TenantLimiter
) -> None:
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        a, b = await known_tenant(client, http), await known_tenant(client, http)
        async with held_in_flight(http, a, limiter, IN_FLIGHT):
            started = time.monotonic()
            r = await http.get("/v1/memories", headers=a["headers"])
            waited = time.monotonic() - started
            assert_problem(r, 429, mentions="in flight")
            assert int(r.headers["Retry-After"]) >= 1
            assert waited >= QUEUE_WAIT_MS / 1000 * 0.9, waited  # it queued before the refusal
            # another tenant is served meanwhile
            assert (await http.get("/v1/memories", headers=b["headers"])).status_code == 200
            # a request that queues gets the place of one that ends within the wait
            queued = asyncio.create_task(http.get("/v1/memories", headers=a["headers"]))
            await until(lambda: len(limiter._queues[uuid.UUID(a["id"])].waiting) == 1)
        assert (await queued).status_code == 200
        assert limiter.in_flight(uuid.UUID(a["id"])) == 0


async def test_refusal_comes_before_the_body_is_read(
    client: Any, server: tuple[str, Litestar], limiter: TenantLimiter
) -> None:
    base, app = server
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b'{"content": "read"}', "more_body": False}

    async def call(tenant: dict[str, Any], length: int) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        token = tenant["headers"]["Authorization"].encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/memories",
            "raw_path": b"/v1/memories", "query_string": b"", "root_path": "",
            "headers": [
                (b"authorization", token),
                (b"content-type", b"application/json"),
                (b"content-length", str(length).encode()),
            ],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {},
        }
        await app(scope, receive, send)
        return int(sent[0]["status"])

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        a, b = await known_tenant(client, http), await known_tenant(client, http)
        async with held_in_flight(http, a, limiter, IN_FLIGHT):
            # a 20 MB body announced by a tenant over its share: refused unread
            assert await call(a, 20_000_000) == 429
            assert reads == 0
            # the same call for a tenant under its share reads the body and stores it
            assert await call(b, len(b'{"content": "read"}')) == 201
            assert reads >= 1


async def test_long_polls_are_bounded_and_leave_the_in_flight_share(
    client: Any, limited: str, limiter: TenantLimiter
) -> None:
    claim = {"worker_id": "w", "queues": ["nothing-here"], "wait_s": 1.5}
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        a = await known_tenant(client, http)
        tid = uuid.UUID(a["id"])
        polls = [
            asyncio.create_task(http.post("/v1/workers/claim", json=claim, headers=a["headers"]))
            for _ in range(LONG_POLLS)
        ]
        await until(lambda: limiter.held(tid, "long_poll") == LONG_POLLS)
        r = await http.post("/v1/workers/claim", json=claim, headers=a["headers"])
        assert_problem(r, 429, mentions="long poll")
        assert int(r.headers["Retry-After"]) >= 1
        # a claim that does not wait is no long poll, and the waiting ones hold no
        # in-flight place: the tenant's other requests still go through
        quick = {**claim, "wait_s": 0}
        r = await http.post("/v1/workers/claim", json=quick, headers=a["headers"])
        assert r.status_code == 204, r.text
        answers = await asyncio.gather(
            *[http.get("/v1/memories", headers=a["headers"]) for _ in range(IN_FLIGHT)]
        )
        assert [x.status_code for x in answers] == [200] * IN_FLIGHT
        assert [(await p).status_code for p in polls] == [204] * LONG_POLLS
        assert limiter.held(tid, "long_poll") == 0


async def test_requests_without_a_valid_key_are_limited_per_address(
    client: Any, limited: str
) -> None:
    fake = {"Authorization": f"Bearer mk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"}
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        tenant = await known_tenant(client, http)
        for headers in ({}, {"Authorization": "Bearer nonsense"}, fake):
            answers = await asyncio.gather(
                *[http.get("/v1/memories", headers=headers) for _ in range(20)]
            )
            codes = [r.status_code for r in answers]
            assert set(codes) <= {401, 429} and codes.count(429) >= 10, codes
            refused = next(r for r in answers if r.status_code == 429)
            assert_problem(refused, 429, mentions="without a valid key")
            assert int(refused.headers["Retry-After"]) >= 1
            # a tenant's requests from the same address are not the address's
            assert (await http.get("/v1/memories", headers=tenant["headers"])).status_code == 200


async def test_a_new_keys_first_burst_shares_one_look_up(
    client: Any, limited: str, server: tuple[str, Litestar]
) -> None:
    # a key the server has never seen: its first requests wait for one look-up together,
    # instead of each holding one of the address's few places for a look-up of its own
    tenant = await new_tenant(client)
    tenants = server[1].state.runtime.tenants
    key = tenant["api_key"]
    assert tenants.known_tenant(key) is None and not tenants.lookup_pending(key)
    burst = [asyncio.create_task(tenants.authenticate(key)) for _ in range(10)]
    await asyncio.sleep(0)
    assert tenants.lookup_pending(key) and len(tenants._lookups) == 1
    assert {str(t) for t in await asyncio.gather(*burst)} == {tenant["id"]}
    assert not tenants.lookup_pending(key) and tenants.known_tenant(key) == uuid.UUID(tenant["id"])
    # a burst within the rate is served: what is over the in-flight share queues briefly
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        answers = await asyncio.gather(
            *[http.get("/v1/memories", headers=tenant["headers"]) for _ in range(2 * RATE)]
        )
    assert [r.status_code for r in answers] == [200] * 2 * RATE


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
    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        a, b = await known_tenant(client, http), await known_tenant(client, http)
        async with open_streams(http, a["headers"], STREAMS):
            r = await http.get("/v1/events/stream", headers=a["headers"])
            assert_problem(r, 429, mentions="stream")
            async with open_streams(http, b["headers"], 1):
                pass
        # the slots came back when the streams closed
        await asyncio.sleep(0.2)
        async with open_streams(http, a["headers"], STREAMS):
            pass


async def test_a_tenant_at_its_limits_does_not_hold_up_another(
    client: Any, limited: str, limiter: TenantLimiter
) -> None:
    stop = asyncio.Event()
    noisy_codes: list[int] = []

    async def flood(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        while not stop.is_set():  # ignores every 429, as a runaway client would
            r = await http.get("/v1/memories", params={"limit": 10}, headers=headers)
            noisy_codes.append(r.status_code)

    async with httpx.AsyncClient(base_url=limited, timeout=30) as http:
        noisy, quiet = await known_tenant(client, http), await known_tenant(client, http)
        async with open_streams(http, noisy["headers"], STREAMS):
            floods = [asyncio.create_task(flood(http, noisy["headers"])) for _ in range(16)]
            try:
                for _ in range(RATE):  # within the quiet tenant's own rate
                    started = time.monotonic()
                    r = await http.get("/v1/memories", params={"limit": 10}, headers=quiet["headers"])
                    # a generous deadline: a request stuck behind the flood's queue would miss it
                    assert r.status_code == 200 and time.monotonic() - started < 2.0, r.text
                    await asyncio.sleep(1.2 / RATE)
            finally:
                stop.set()
                await asyncio.gather(*floods)
    assert noisy_codes.count(429) > len(noisy_codes) / 2, "the flood was not refused"
    assert limiter.in_flight(uuid.UUID(noisy["id"])) == 0


async def test_the_fair_thread_serves_owners_in_turn() -> None:
    # one owner's queue of jobs does not stand before another owner's job
    thread, ran, hold = FairThread("test-fair"), [], threading.Event()

    def job(name: str) -> str:
        hold.wait(10)
        ran.append(name)
        return name

    try:
        flood = [asyncio.create_task(thread.run("a", lambda i=i: job(f"a{i}"))) for i in range(5)]
        await asyncio.sleep(0.05)  # a0 is running, a1..a4 queued
        other = asyncio.create_task(thread.run("b", lambda: job("b")))
        await asyncio.sleep(0.05)
        hold.set()
        assert await other == "b"
        await asyncio.gather(*flood)
        # b waits for the running job and at most one queued job of a, not for all four
        assert ran == ["a0", "a1", "b", "a2", "a3", "a4"], ran
    finally:
        thread.close()
