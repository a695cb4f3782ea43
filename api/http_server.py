"""The HTTP/1.1 protocol classes the service runs under uvicorn.

uvicorn answers a request it cannot parse (a request line or headers over its
parser's limits, about 64 KiB, or bytes that are not HTTP) itself, before the
app sees it, with a ``text/plain`` 400. These subclasses answer the same
refusal as every other one of the service: an RFC 9457 problem document that
says what was wrong. Everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import PROBLEM_JSON

log = logging.getLogger(__name__)

UNREADABLE = (
    "the request could not be read as HTTP/1.1: malformed, or its request line and "
    "headers are over 64 KiB (send a long filter or query in a POST body instead)"
)


def problem_bytes() -> bytes:
    """The refusal; its trace id (no request span exists yet) is also in the log line."""
    trace_id = secrets.token_hex(16)
    log.info("refused a request that is not readable HTTP/1.1 (trace_id %s)", trace_id)
    return json.dumps(
        {
            "type": "https://memory-service.dev/problems/400",
            "title": "Bad request",
            "status": 400,
            "detail": UNREADABLE,
            "trace_id": trace_id,
        }
    ).encode()


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = problem_bytes()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
            + f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = problem_bytes()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def protocol(parser: str) -> type[asyncio.Protocol]:
    """The protocol class for ``MEMORY_HTTP_PARSER`` (auto: httptools, as uvicorn's auto)."""
    return ProblemH11Protocol if parser == "h11" else ProblemHttpToolsProtocol
