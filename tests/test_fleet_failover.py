"""The whole fleet at once: the shipped nginx.conf in front of two service processes on a
PostgreSQL primary with a streaming standby, all real and all on this machine.

The primary and the standby are made with the embedded PostgreSQL's own binaries
(``initdb``, ``pg_basebackup -R``, ``pg_ctl promote``: ``tests/pg_cluster.py``); the
replicas' primary URL names both hosts with ``target_session_attrs=read-write`` and
their replica URL the standby, as ``docs/scaling.md`` describes. Through the proxy:
console sign-in and use on both replicas, tenant affinity (one replica answers a
tenant and the other holds none of its vectors), read-your-writes through the standby,
the standby stopped and started, the primary killed (writes 503, searches 200), the
standby promoted (writes resume) and the change feed complete across it: every
accepted write exactly once, in order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from conftest import ADMIN_TOKEN
from helpers import until
from live_http import free_port, start_service_process, stop_service_process
from pg_cluster import Cluster
from test_fleet import (
    Fleet,
    Replica,
    faiss_vectors,
    new_tenant_on,
    nginx,
    render_nginx_conf,
    require_nginx,
    sign_in,
    vectors,
)

from memory_service.infra.replicas import SERVED_BY_HEADER, TOKEN_HEADER

pytestmark = pytest.mark.slow


@dataclass
class Cluster2:
    cluster: Cluster
    fleet: Fleet


@pytest.fixture
async def whole(tmp_path: Path) -> AsyncIterator[Cluster2]:
    require_nginx()
    cluster = await anyio.to_thread.run_sync(lambda: Cluster().start())
    p, s = cluster.primary, cluster.standby
    primary_url = (
        f"postgresql://postgres@127.0.0.1:{p.port},127.0.0.1:{s.port}/postgres"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    proxy_port = free_port()
    public = f"http://127.0.0.1:{proxy_port}"
    started: list[Replica] = []
    try:
        for name in ("r1", "r2"):
            process, base = await start_service_process(primary_url, {
                "MEMORY_REPLICA_ID": name,
                "MEMORY_PUBLIC_URL": public,
                "MEMORY_FAISS_PRELOAD": "false",
                "MEMORY_ADMIN_TOKEN": ADMIN_TOKEN,
                "MEMORY_DATABASE_REPLICA_URLS": s.url,
                "MEMORY_DB_POOL_TIMEOUT_SECONDS": "2",
                "MEMORY_BREAKER_RESET_SECONDS": "1",
                "MEMORY_REPLICA_CHECK_INTERVAL_S": "0.2",
            })
            started.append(Replica(name, base, process))
        conf = render_nginx_conf(proxy_port, [int(r.base.rsplit(":", 1)[1]) for r in started], tmp_path)
        with nginx(conf, tmp_path):
            async with httpx.AsyncClient(timeout=10) as http:
                await until(lambda: ok(http, f"{public}/health"), 10, "nginx")
            yield Cluster2(cluster, Fleet(public, {r.name: r for r in started}))
    finally:
        for replica in started:
            await stop_service_process(replica.process)
        await anyio.to_thread.run_sync(cluster.close)


async def ok(http: httpx.AsyncClient, url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get(url)).status_code == 200
    return False


async def test_the_fleet_on_a_primary_and_a_standby(whole: Cluster2) -> None:
    cluster, fleet = whole.cluster, whole.fleet
    public = fleet.public
    timings: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        tenant = await new_tenant_on(http, fleet, "r1")
        h = tenant["headers"]
        written: list[str] = []  # ids of accepted memory writes, in order

        # tenant affinity: one replica answers the tenant; only it holds the vectors
        added = await http.post(f"{public}/v1/memories/batch", json={"items": vectors(20, 3)}, headers=h)
        assert added.status_code == 201, added.text
        assert added.headers["x-served-by"] == "r1"
        written += [m["id"] for m in added.json()["items"]]
        probe = {"embedding": vectors(20, 3)[4]["embedding"], "k": 3, "mode": "vector"}
        found = await http.post(f"{public}/v1/memories/search", json=probe, headers=h)
        assert found.status_code == 200 and found.headers["x-served-by"] == "r1", found.text
        assert found.json()["results"][0]["memory"]["content"] == "fact 3-4"
        assert await faiss_vectors(http, fleet.replicas["r1"]) == 20
        assert await faiss_vectors(http, fleet.replicas["r2"]) == 0

        # the console through the proxy, and its session on both replicas
        cookie, _ = await sign_in(http, fleet, tenant["api_key"])
        http.cookies.clear()
        jar = {"Cookie": f"console_session={cookie}"}
        for replica in fleet.replicas.values():
            page = await http.get(f"{replica.base}/console/memories", headers=jar)
            assert page.status_code == 200 and page.headers["x-served-by"] == replica.name

        # read-your-writes: the write's token makes a standby read wait for it (or go
        # to the primary), so the writer sees its own write
        one = await http.post(f"{public}/v1/memories", json={"content": "mine at once"}, headers=h)
        assert one.status_code == 201, one.text
        written.append(one.json()["id"])
        token = one.headers[TOKEN_HEADER]
        read = await http.get(f"{public}/v1/memories/{one.json()['id']}", headers={**h, TOKEN_HEADER: token})
        assert read.status_code == 200 and read.json()["content"] == "mine at once", read.text
        assert read.headers[SERVED_BY_HEADER] in ("standby-1", "primary")

        async def listed_from(node: str) -> bool:
            r = await http.get(f"{public}/v1/memories?limit=5", headers=h)
            assert r.status_code == 200, r.text
            return r.headers[SERVED_BY_HEADER] == node

        await until(lambda: listed_from("standby-1"), 15, "reads from the standby")

        # the standby stops: reads go to the primary; it starts again: reads come back
        await anyio.to_thread.run_sync(cluster.standby.stop)
        await until(lambda: listed_from("primary"), 15, "reads to fall back to the primary")
        await anyio.to_thread.run_sync(cluster.standby.start)
        await until(lambda: listed_from("standby-1"), 20, "reads to return to the standby")
        await anyio.to_thread.run_sync(cluster.wait_caught_up)

        # the primary dies: writes 503 with Retry-After, nothing half-written; searches
        # of the held tenant and standby reads go on
        killed = time.monotonic()
        await anyio.to_thread.run_sync(lambda: cluster.primary.stop("immediate"))
        refused = await http.post(f"{public}/v1/memories", json={"content": "refused"}, headers=h)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"].startswith("application/problem+json")
        found = await http.post(f"{public}/v1/memories/search", json=probe, headers=h)
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["memory"]["content"] == "fact 3-4"
        still = await http.get(f"{public}/v1/memories/{one.json()['id']}", headers=h)
        assert still.status_code == 200 and still.headers[SERVED_BY_HEADER] == "standby-1"

        # the standby is promoted; the same URL finds it and writes resume, no restart
        await anyio.to_thread.run_sync(cluster.standby.promote)
        promoted = time.monotonic()

        async def accepted() -> httpx.Response | None:
            r = await http.post(f"{public}/v1/memories", json={"content": "after failover"}, headers=h)
            assert r.status_code in (201, 503), r.text
            return r if r.status_code == 201 else None

        after = await until(accepted, 30, "a write accepted by the promoted standby")
        timings["promoted -> first write (s)"] = time.monotonic() - promoted
        timings["kill -> first write (s)"] = time.monotonic() - killed
        written.append(after.json()["id"])
        for i in range(3):
            r = await http.post(f"{public}/v1/memories", json={"content": f"later {i}"}, headers=h)
            assert r.status_code == 201, r.text
            written.append(r.json()["id"])

        # the change feed holds every accepted write exactly once, in commit order, and
        # nothing that was refused
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"types": "memory", "limit": 500, **({"since": cursor} if cursor else {})}
            page = await http.get(f"{public}/v1/changes", params=params, headers=h)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [c["id"] for c in body["items"] if c["op"] == "upsert"]
            if not body.get("has_more"):
                break
            cursor = body["next_cursor"]
        assert seen == written, (len(seen), len(written))
        contents = [m["content"] for m in (await http.get(f"{public}/v1/memories?limit=100", headers=h)).json()["items"]]
        assert "refused" not in contents
    print(f"\nfleet failover timings: {timings}")
