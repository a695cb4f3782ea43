"""Read-your-writes over read replicas: the consistency token in and out of HTTP.

Only with standbys configured (the runtime's pool is a ``RoutedPool``); without,
requests pass untouched. A route whose handler declares ``opt={"reads":
"standby"}`` tolerates staleness: its connections may come from a standby, and
a request header ``X-Consistency-Token`` makes the standby wait until it has
replayed that position (else the primary answers). The response names the node
that served it in ``X-Database-Node``. Every other successful POST, PUT, PATCH or
DELETE answers the primary's WAL position after it in ``X-Consistency-Token``, for
the client to send with its next reads.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from memory_service.infra.replicas import (
    SERVED_BY_HEADER,
    TOKEN_HEADER,
    ReadRoute,
    RoutedPool,
    parse_token,
    standby_reads,
)

STANDBY_READS: dict[str, Any] = {"reads": "standby"}
"""``opt`` of a route handler whose reads tolerate staleness."""
_TOKEN_KEY = TOKEN_HEADER.lower().encode("latin-1")
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


class ConsistencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(scope["app"].state, "runtime", None)
        pool = getattr(runtime, "pool", None)
        if scope["type"] != "http" or not isinstance(pool, RoutedPool):
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get("reads") == "standby":
            await self._standby_read(scope, receive, send)
        elif scope.get("method") in _WRITES:
            await self._write(pool, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _standby_read(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = next((v for k, v in scope["headers"] if k == _TOKEN_KEY), None)
        route = ReadRoute(parse_token(raw.decode("latin-1")) if raw else None)

        async def named_send(message: Message) -> None:
            if message["type"] == "http.response.start" and route.served_by:
                MutableScopeHeaders.from_message(message)[SERVED_BY_HEADER] = route.served_by[-1]
            await send(message)

        with standby_reads(route):
            await self.app(scope, receive, named_send)

    async def _write(self, pool: RoutedPool, scope: Scope, receive: Receive, send: Send) -> None:
        async def tokened_send(message: Message) -> None:
            if message["type"] == "http.response.start" and int(message["status"]) < 400:
                token = await pool.commit_token()
                if token is not None:
                    MutableScopeHeaders.from_message(message)[TOKEN_HEADER] = token
            await send(message)

        await self.app(scope, receive, tokened_send)
