"""A light HTTP/1.1 load generator: N keep-alive connections replaying prepared requests.

A Python HTTP client spends about a millisecond of CPU on each request; on a
2-core box that shares its cores with the server it measures the client as much as
the server. This one writes request bytes encoded once in advance and reads each
response by its ``Content-Length``, so almost all of the CPU it takes goes to the
kernel's socket calls. It checks every status (anything but 200 counts as an
error) and keeps every latency.

    result = asyncio.run(hammer("127.0.0.1", 8080, requests, clients=16, seconds=15))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoadResult:
    done: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


def post(path: str, body: Any, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    """One ``POST`` with a JSON body, as bytes ready to write."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-type")]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def get(path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    """One ``GET``, as bytes ready to write."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding":
            raise RuntimeError("chunked responses are not supported by this load generator")
    await reader.readexactly(length)
    return status


async def hammer(
    host: str, port: int, requests: Sequence[bytes], *, clients: int, seconds: float
) -> LoadResult:
    """Each of ``clients`` connections sends the next request as soon as its last answer is in."""
    result = LoadResult()
    deadline = time.perf_counter() + seconds

    async def client(start: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = start
        try:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status = await read_response(reader)
                result.latencies_ms.append((time.perf_counter() - began) * 1000.0)
                if status == 200:
                    result.done += 1
                else:
                    result.errors += 1
                i += clients
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    result.seconds = time.perf_counter() - started
    return result
