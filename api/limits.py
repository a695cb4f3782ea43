"""Per-tenant limits at the HTTP edge: admission before the body, slots, body size.

``AdmissionMiddleware`` runs before the guards of every ``/v1`` route (after only
the trace context and the request metrics, so that refusals are counted by route).
From the ``Authorization`` header alone (a hash and a dict look-up, see
``TenantService.known_tenant``; a key not seen yet is looked up once) it decides
whose request it is: a tenant, or, for a request without a valid key (none,
malformed, wrong, revoked), the client's address. It then takes a rate token and a
place among that party's requests in flight (``TenantLimiter.enter``), waiting briefly for one;
refused, it answers 429 with ``Retry-After`` and a problem document itself, before
routing guards run and before a byte of the body is read. The place is given back
when the response has been sent.

``enforce_tenant_limits`` runs right after authentication on the tenant router: it
refuses bodies over ``tenant_max_request_bytes`` (413) from their ``Content-Length``
and, for a route that declares ``opt={"tenant_slot": "stream"}`` (or
``"long_poll"``), holds one of the tenant's slots of that kind instead of its
in-flight place (``hold_slot``); a route that waits only for some bodies (a claim
with ``wait_s``) calls ``hold_slot`` itself. ``TenantSlotMiddleware`` gives the slot
back once the response has been sent completely, which for a stream is when it
closes.
"""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.response import ServerSentEvent
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from memory_service.errors import FieldError, MemoryServiceError, PayloadTooLarge, RateLimited
from memory_service.infra import stages
from memory_service.infra.fairness import Party
from memory_service.infra.telemetry import current_trace_id

SLOT_OPTION = "tenant_slot"
# a route that reads its body as a stream names the media types it takes with this option
STREAMED_BODY_OPTION = "streamed_body"
_RELEASE = "tenant_slot_release"
_IN_FLIGHT = "tenant_in_flight_release"


class AdmissionMiddleware:
    """Admits each ``/v1`` request by its party's rate and in-flight share, or refuses it
    with a 429 before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(scope["app"].state, "runtime", None)
        if scope["type"] != "http" or runtime is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        try:
            with stages.timed("auth"):
                party = await party_of(scope, runtime)
            if party is None:  # the admin token: the operator is not rationed
                await self.app(scope, receive, send)
                return
            with stages.timed("admission"):
                release = await runtime.limiter.enter(party)
        except RateLimited as refused:
            await _refuse(send, refused)
            return
        scope.setdefault("state", {})[_IN_FLIGHT] = release
        try:
            await self.app(scope, receive, send)
        finally:
            release()


async def party_of(scope: Scope, runtime: Any) -> Party | None:
    """Whose request this is, from its headers only; ``None`` for the admin token.

    A key this process has seen names its tenant at the cost of a hash. A key-shaped one
    it has not seen (the first request after a start, a new key from another process) is
    looked up once, holding one of its address's in-flight places meanwhile, so that a
    flood of made-up keys from one address costs the database at most that many look-ups
    at a time (the key's other requests meanwhile wait for that look-up, holding none);
    a key that fails is charged to the address's rate as a failed attempt."""
    token = _bearer(scope)
    client = scope.get("client")
    address = f"address {client[0] if client else 'unknown'}"
    if not token:
        return address
    tenants = runtime.tenants
    tenant: uuid.UUID | None = tenants.known_tenant(token)
    if tenant is not None:
        return tenant
    admin: str | None = runtime.settings.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return None
    if not tenants.is_key_shaped(token):
        return address
    if tenants.lookup_pending(token):  # a request of this key is looking it up: wait for it
        release = _no_place
    else:
        release = await runtime.limiter.enter(address, rated=False)
    try:
        return await tenants.authenticate(token)
    except MemoryServiceError:  # unknown or revoked (401) or no database (503): the app says so
        return address
    finally:
        release()


def _no_place() -> None:
    return None


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else ""
    return ""


async def _refuse(send: Send, refused: RateLimited) -> None:
    body = json.dumps(
        {
            "type": "https://memory-service.dev/problems/429",
            "title": refused.title,
            "status": 429,
            "detail": refused.detail,
            "trace_id": current_trace_id(),
        }
    ).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(refused.retry_after).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def enforce_tenant_limits(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    runtime = connection.app.state.runtime
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
        hold_slot(connection, kind)


def hold_slot(connection: ASGIConnection[Any, Any, Any, Any], kind: str) -> None:
    """Hold one of the tenant's ``kind`` slots until the response has been sent (429 when
    all are taken), and give back the request's in-flight place: it mostly waits."""
    runtime = connection.app.state.runtime
    state = connection.scope.setdefault("state", {})
    if _RELEASE in state:
        return
    state[_RELEASE] = runtime.limiter.hold(connection.state.tenant_id, kind)
    in_flight = state.pop(_IN_FLIGHT, None)
    if in_flight is not None:
        in_flight()


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
    """Gives back a slot taken by ``hold_slot`` when the response is over."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        try:
            await next_app(scope, receive, send)
        finally:
            release = scope.get("state", {}).pop(_RELEASE, None)
            if release is not None:
                release()
