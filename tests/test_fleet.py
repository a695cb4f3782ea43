"""A fleet: two ``memory-service serve`` processes on one database behind the shipped nginx.conf.

Everything is real: two service processes, a fresh database on the embedded
PostgreSQL, and Debian's nginx running ``deploy/nginx.conf`` itself, with only its
``server`` addresses and ``listen`` port rendered for this test. Through the proxy
it checks that the console works whichever replica answers, that a tenant's
requests all reach one replica and the other holds none of its vectors, and that
when a replica stops its tenants are served by the other without an error.
nginx is required: without it this test fails and says how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.abc
import httpx
import psycopg
import pytest
from conftest import ADMIN_TOKEN
from console_support import NONCE, csrf_of
from live_http import free_port, start_service_process, stop_service_process
from psycopg import sql
from psycopg.conninfo import make_conninfo

NGINX = Path("/usr/sbin/nginx")
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "nginx.conf"
EXAMPLE = ROOT / "docs" / "examples" / "browser-storage.json"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DIM = 384


def render_nginx_conf(listen: int, replicas: list[int], folder: Path) -> Path:
    """The shipped file with this test's addresses: its routing is left exactly as shipped."""
    text = SHIPPED.read_text()
    shipped_servers = re.findall(r"^\s*server (api-\d+):8080\b", text, re.M)
    assert len(shipped_servers) == len(replicas), shipped_servers
    for name, port in zip(shipped_servers, replicas, strict=True):
        text = re.sub(rf"\bserver {name}:8080\b", f"server 127.0.0.1:{port}", text)
    text, listens = re.subn(r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{listen};", text, flags=re.M)
    assert listens == 1
    # logs into the test's folder instead of /var/log/nginx (logging only, not routing)
    text = text.replace("http {", f"http {{\n  access_log {folder / 'access.log'};", 1)
    rendered = folder / "nginx.conf"
    rendered.write_text(text)
    return rendered


def require_nginx() -> None:
    if not NGINX.exists():
        pytest.fail(
            "nginx is not installed: the fleet test runs the shipped deploy/nginx.conf in a real "
            "nginx. Install it (apt-get install nginx, or run .ci/run)",
            pytrace=False,
        )


@contextlib.contextmanager
def nginx(conf: Path, folder: Path) -> Iterator[None]:
    process = subprocess.Popen(
        [str(NGINX), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf),
         "-g", f"daemon off; pid {folder / 'nginx.pid'};"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
        assert process.poll() is None, f"nginx exited: {(folder / 'error.log').read_text()}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def fleet_database(database_url: str) -> Iterator[str]:
    """A database of its own: no other test's tenants for the replicas to hold."""
    name = f"fleet_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Replica:
    name: str
    base: str
    process: anyio.abc.Process


@dataclass
class Fleet:
    public: str
    replicas: dict[str, Replica]


@pytest.fixture
async def fleet(fleet_database: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    require_nginx()  # before anything starts: a missing nginx is a failure, never a skip
    proxy_port = free_port()
    public = f"http://127.0.0.1:{proxy_port}"

    async def start(name: str) -> Replica:
        env = {
            "MEMORY_REPLICA_ID": name,
            "MEMORY_PUBLIC_URL": public,
            "MEMORY_FAISS_PRELOAD": "false",  # as deploy/compose.yaml runs them
            "MEMORY_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        process, base = await start_service_process(fleet_database, env)
        return Replica(name, base, process)

    # the first start applies the migrations; the second then starts alongside nothing
    first = await start("r1")
    started = [first]
    try:
        started.append(await start("r2"))
        ports = [int(r.base.rsplit(":", 1)[1]) for r in started]
        conf = render_nginx_conf(proxy_port, ports, tmp_path)
        with nginx(conf, tmp_path):
            async with httpx.AsyncClient(timeout=10) as http:
                deadline = time.monotonic() + 10
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{public}/health")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
                    await asyncio.sleep(0.1)
            yield Fleet(public, {r.name: r for r in started})
    finally:
        for replica in started:
            await stop_service_process(replica.process)


async def faiss_vectors(http: httpx.AsyncClient, replica: Replica) -> float:
    text = (await http.get(f"{replica.base}/metrics")).text
    found = re.search(r'^memory_index_size\{index="faiss"\} ([0-9.e+]+)$', text, re.M)
    assert found, "the replica reports no FAISS index size"
    return float(found[1])


async def new_tenant_on(http: httpx.AsyncClient, fleet: Fleet, want: str) -> dict[str, Any]:
    """A tenant whose requests the proxy's hash sends to replica ``want``."""
    for _ in range(40):
        made = await http.post(f"{fleet.public}/v1/admin/tenants", json={"name": "fleet"}, headers=ADMIN)
        assert made.status_code == 201, made.text
        headers = {"Authorization": f"Bearer {made.json()['api_key']}"}
        probe = await http.get(f"{fleet.public}/v1/memories?limit=1", headers=headers)
        assert probe.status_code == 200, probe.text
        if probe.headers["x-served-by"] == want:
            return {**made.json(), "headers": headers}
    raise AssertionError(f"no tenant of 40 hashed to {want}")


def vectors(count: int, seed: int) -> list[dict[str, Any]]:
    items = []
    for i in range(count):
        v = [0.0] * DIM
        v[(seed * 7 + i) % DIM] = 1.0
        v[(seed * 13 + 3 * i + 1) % DIM] = 0.5
        items.append({"content": f"fact {seed}-{i}", "embedding": v, "metadata": {"i": i}})
    return items


async def sign_in(http: httpx.AsyncClient, fleet: Fleet, api_key: str) -> tuple[str, str]:
    """Signs in through the proxy as a browser does (Origin: the public URL); the
    session cookie's value and the CSRF token."""
    form = await http.get(f"{fleet.public}/console/login")
    nonce = NONCE.search(form.text)
    assert form.status_code == 200 and nonce, form.text
    signed = await http.post(
        f"{fleet.public}/console/login",
        data={"_csrf": nonce[1], "api_key": api_key, "next": "/console/tasks"},
        headers={"Origin": fleet.public},
    )
    assert signed.status_code == 303, signed.text
    cookie = http.cookies.get("console_session")
    assert cookie
    board = await http.get(f"{fleet.public}/console/tasks")
    assert board.status_code == 200, board.text
    return cookie, csrf_of(board.text)


async def test_two_replicas_behind_the_shipped_proxy(fleet: Fleet) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        a = await new_tenant_on(http, fleet, "r1")
        b = await new_tenant_on(http, fleet, "r2")

        # tenant affinity: all of a tenant's requests reach one replica...
        for tenant, count, seed in ((a, 30, 1), (b, 50, 2)):
            served = set()
            added = await http.post(
                f"{fleet.public}/v1/memories/batch", json={"items": vectors(count, seed)},
                headers=tenant["headers"],
            )
            assert added.status_code == 201, added.text
            served.add(added.headers["x-served-by"])
            for i in range(6):
                query = {"embedding": vectors(count, seed)[i]["embedding"], "k": 3, "mode": "vector"}
                found = await http.post(f"{fleet.public}/v1/memories/search", json=query, headers=tenant["headers"])
                assert found.status_code == 200, found.text
                assert found.json()["results"][0]["memory"]["content"] == f"fact {seed}-{i}"
                served.add(found.headers["x-served-by"])
            assert len(served) == 1, served
        # a client's X-Tenant header decides over the key (one value for all of a tenant's keys)
        a_prefix = a["api_key"].split("_")[1]
        steered = await http.get(f"{fleet.public}/v1/memories?limit=1", headers={**b["headers"], "X-Tenant": a_prefix})
        assert steered.status_code == 200 and steered.headers["x-served-by"] == "r1"
        # ... and only that replica holds its vectors
        assert await faiss_vectors(http, fleet.replicas["r1"]) == 30
        assert await faiss_vectors(http, fleet.replicas["r2"]) == 50

        # the console: signed in through the proxy, a session any replica serves
        wrong_origin = await http.post(
            f"{fleet.public}/console/login", data={"_csrf": "x", "api_key": a["api_key"]},
            headers={"Origin": fleet.replicas["r1"].base},
        )
        assert wrong_origin.status_code == 403  # only the public origin is the console's own
        cookie, csrf = await sign_in(http, fleet, a["api_key"])
        http.cookies.clear()
        jar = {"Cookie": f"console_session={cookie}"}  # the same cookie, whichever replica
        for replica in fleet.replicas.values():
            page = await http.get(f"{replica.base}/console/memories", headers=jar)
            assert page.status_code == 200 and page.headers["x-served-by"] == replica.name, page.text
        # an upload made on one replica is run from the other
        report = await http.post(
            f"{fleet.replicas['r1'].base}/console/migration/dry-run",
            data={"_csrf": csrf, "pasted": EXAMPLE.read_text()},
            headers={"Origin": fleet.public, **jar},
        )
        assert report.status_code == 200, report.text
        upload_id = re.search(r'name="upload_id" value="([^"]+)"', report.text)
        assert upload_id, report.text
        run = await http.post(
            f"{fleet.replicas['r2'].base}/console/migration/run",
            data={"_csrf": csrf, "upload_id": upload_id[1]}, headers={"Origin": fleet.public, **jar},
        )
        assert run.status_code == 303, run.text
        assert run.headers["location"].startswith("/console/migration/")
        home = (await http.get(f"{fleet.public}/console/tasks", headers=jar)).headers["x-served-by"]

        # a replica stops: its tenants, and the console session it served, move to the other
        gone = fleet.replicas.pop("r1")
        await stop_service_process(gone.process)
        started = time.monotonic()
        for i in range(10):
            query = {"embedding": vectors(30, 1)[i]["embedding"], "k": 3, "mode": "vector"}
            found = await http.post(f"{fleet.public}/v1/memories/search", json=query, headers=a["headers"])
            assert found.status_code == 200, found.text
            assert found.headers["x-served-by"] == "r2"
            assert found.json()["results"][0]["memory"]["content"] == f"fact 1-{i}"
            other = await http.get(f"{fleet.public}/v1/memories?limit=5", headers=b["headers"])
            assert other.status_code == 200 and other.headers["x-served-by"] == "r2"
            page = await http.get(f"{fleet.public}/console/tasks", headers=jar)
            assert page.status_code == 200 and page.headers["x-served-by"] == "r2", (home, page.text)
        assert time.monotonic() - started < 10
        listed = await http.get(f"{fleet.public}/v1/memories?limit=200", headers=a["headers"])
        held_by_a = len(listed.json()["items"])
        assert held_by_a > 30  # its 30 vectors and what the console's migration imported
        assert await faiss_vectors(http, fleet.replicas["r2"]) == 50 + held_by_a  # a warmed there
