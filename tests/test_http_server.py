"""A request uvicorn cannot parse is refused with a problem document, under both parsers."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from memory_service.config import Settings
from tests.live_http import serve


async def exchange(base: str, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` bytes, read the whole answer (the server closes the connection)."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("parser", ["auto", "h11"])
async def test_an_unreadable_request_gets_a_problem_document(settings: Settings, parser: str) -> None:
    async with serve(settings, parser=parser) as base:
        unreadable = [b"NOT HTTP AT ALL\r\n\r\n"]
        if parser == "auto":  # httptools: a request line over 64 KiB (a filter too long for a URL)
            unreadable.append(b"GET /v1/memories?filter=" + b"%7B" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        for raw in unreadable:
            status, headers, body = await exchange(base, raw)
            assert status.startswith("HTTP/1.1 400"), status
            assert headers["content-type"] == "application/problem+json"
            problem = json.loads(body)
            assert problem["status"] == 400 and "could not be read as HTTP/1.1" in problem["detail"]
            assert len(problem["trace_id"]) == 32
        # and a request that can be read still reaches the app
        status, headers, _ = await exchange(base, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status.startswith("HTTP/1.1 200")
