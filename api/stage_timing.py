"""The HTTP side of the per-stage request timing (``memory_service.infra.stages``).

``TimedRequest`` counts reading and decoding a JSON body as ``parse`` (as does
the guard that checks the body: ``timed_guard("parse", check_request)``);
``timed_guard`` counts a guard (authentication, admission) as its stage;
``mark_handled`` (an ``after_request`` hook) notes when the handler returned, so
that encoding the response until its first byte counts as ``serialise``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from memory_service.infra import stages


class TimedRequest(Request[Any, Any, Any]):
    async def body(self) -> bytes:
        with stages.timed("parse"):
            return await super().body()

    async def json(self) -> Any:
        with stages.timed("parse"):
            return await super().json()


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def timed_guard(stage: str, guard: Guard) -> Guard:
    async def timed(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        with stages.timed(stage):
            await guard(connection, handler)

    return timed


async def mark_handled(response: Response[Any]) -> Response[Any]:
    clock = stages.current()
    if clock is not None:
        clock.handled()
    return response
