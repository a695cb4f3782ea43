"""Per-tenant limits at the HTTP edge: a guard that admits requests and a slot releaser.

``enforce_tenant_limits`` runs right after authentication on the tenant router:
it takes a rate token, refuses bodies over ``tenant_max_request_bytes`` (413)
from their ``Content-Length``, and, for a route that declares
``opt={"tenant_slot": "stream"}`` (or ``"long_poll"``), holds one of the tenant's
slots of that kind. ``TenantSlotMiddleware`` gives the slot back once the
response has been sent completely, which for a stream is when it closes. A new
route that streams or waits opts in with that one ``opt`` entry.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.response import ServerSentEvent
from litestar.types import ASGIApp, Receive, Scope, Send

from memory_service.errors import FieldError, PayloadTooLarge

SLOT_OPTION = "tenant_slot"
# a route that reads its body as a stream names the media types it takes with this option
STREAMED_BODY_OPTION = "streamed_body"
_RELEASE = "tenant_slot_release"


async def enforce_tenant_limits(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    runtime = connection.app.state.runtime
    tenant_id: uuid.UUID = connection.state.tenant_id
    runtime.limiter.admit(tenant_id)
    limit = runtime.settings.tenant_max_request_bytes
    length = connection.headers.get("content-length", "")
    # a route that reads its body as a stream, in bounded pieces, opts out of the cap
    streamed = handler.opt.get(STREAMED_BODY_OPTION, False)
    if limit and not streamed and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"a request body holds at most {limit} bytes, not {length}",
            errors=[FieldError("body", f"at most {limit} bytes")],
        )
    kind = slot_kind(handler)
    if kind:
        connection.scope.setdefault("state", {})[_RELEASE] = runtime.limiter.hold(tenant_id, kind)


def slot_kind(handler: BaseRouteHandler) -> str | None:
    """The slot a route holds: its ``opt``, or ``"stream"`` for any Server-Sent Events route."""
    kind = handler.opt.get(SLOT_OPTION)
    if kind:
        return str(kind)
    signature = getattr(handler, "parsed_fn_signature", None)
    returns = getattr(getattr(signature, "return_type", None), "annotation", None)
    if isinstance(returns, type) and issubclass(returns, ServerSentEvent):
        return "stream"
    return None


class TenantSlotMiddleware(ASGIMiddleware):
    """Gives back a slot taken by ``enforce_tenant_limits`` when the response is over."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        try:
            await next_app(scope, receive, send)
        finally:
            release = scope.get("state", {}).pop(_RELEASE, None)
            if release is not None:
                release()
