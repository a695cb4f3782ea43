"""Real HTTP for tests: uvicorn servers, a service in another OS process, an SSE reader.

Streams need a real connection (the in-process test client buffers responses), and
cross-process fan-out needs real processes; these helpers give both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import uvicorn

from api.app import create_app
from api.http_server import protocol
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder


async def in_app_loop(client: Any, function: Any, *args: Any) -> Any:
    """Run a coroutine function on the app's event loop (the test client runs the app
    in its own thread; the app's pool, queues and events belong to that loop)."""
    return await anyio.to_thread.run_sync(lambda: client.blocking_portal.call(function, *args))


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, port: int = 0, app: Any = None, parser: str = "auto"
) -> AsyncIterator[str]:
    """The app (``app``, or one built from ``settings``) on a real socket in this event
    loop, under the service's own protocol class for ``parser``; ``port`` fixed lets a
    test restart it."""
    app = app or create_app(settings, embedder=HashEmbedder(384))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        http=protocol(parser),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SSEReader:
    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return {**json.loads(fields["data"]), "sse_id": fields.get("id")}
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("stream ended")


class BaseUrlClient:
    """The minimal ``post`` that ``post_events`` needs, against a base URL."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self._http, self._base = http, base

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self._http.post(self._base + path, **kwargs)


async def start_service_process(
    database_url: str, env: Mapping[str, str] | None = None
) -> tuple[anyio.abc.Process, str]:
    """``memory-service serve`` in a separate OS process on the same database, once ready;
    ``env`` adds or overrides its ``MEMORY_*`` settings."""
    port = free_port()
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEMORY_DATABASE_URL": database_url,
        "MEMORY_EMBEDDING_MODEL": "hash:384",
        "MEMORY_SSE_HEARTBEAT_SECONDS": "0.5",
        "MEMORY_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    process = await anyio.open_process(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert process.returncode is None, "the service process exited"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/ready")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the service process did not become ready"
                await asyncio.sleep(0.3)
    except BaseException:
        await stop_service_process(process)
        raise
    return process, base


async def stop_service_process(process: anyio.abc.Process) -> None:
    """SIGTERM (the service drains and closes), then wait for the exit."""
    if process.returncode is None:
        process.terminate()
    with anyio.fail_after(30):
        await process.wait()
    await process.aclose()


@contextlib.asynccontextmanager
async def service_process(database_url: str) -> AsyncIterator[str]:
    """``memory-service serve`` in a separate OS process on the same database."""
    process, base = await start_service_process(database_url)
    try:
        yield base
    finally:
        await stop_service_process(process)
