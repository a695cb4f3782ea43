"""Console sessions and CSRF: who is signed in, and proof that a form came from the console.

Signing in exchanges a tenant API key for a random session id. The key stays on
the server, in the app's ``console_sessions`` store, next to a per-session CSRF
token; the browser holds only the id, in an ``HttpOnly``, ``SameSite=Strict``
cookie scoped to ``/console``. Every request re-authenticates the stored key
through ``TenantService`` (so a revoked key ends its sessions), and every unsafe
request must echo the session's CSRF token, in the ``_csrf`` form field or the
``X-CSRF-Token`` header (the synchronizer-token pattern). The sign-in form, which
has no session yet, is protected by a double-submit nonce in a short-lived cookie.
A cross-site ``Origin`` is refused outright on unsafe requests.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.types import ASGIApp, Receive, Scope, Send

from memory_service.errors import Unauthenticated
from memory_service.tenants import TenantService

SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
SESSION_STORE = "console_sessions"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/console/login"


class SignInRequired(Exception):
    """No valid session: the console answers with a redirect to the sign-in page."""


class CSRFRefused(Exception):
    """An unsafe request without the right CSRF token, or from another site."""


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    session_id: str
    api_key: str
    csrf_token: str


def _store(connection: ASGIConnection[Any, Any, Any, Any]) -> Store:
    return connection.app.stores.get(SESSION_STORE)


def _cookie(name: str, value: str, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        key=name,
        value=value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def is_https(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    return connection.url.scheme == "https"


async def load_session(connection: ASGIConnection[Any, Any, Any, Any]) -> ConsoleSession | None:
    session_id = connection.cookies.get(SESSION_COOKIE)
    if not session_id or len(session_id) > 128:
        return None
    raw = await _store(connection).get(session_id, renew_for=SESSION_SECONDS)
    if raw is None:
        return None
    data = msgspec.json.decode(raw)
    return ConsoleSession(session_id, data["key"], data["csrf"])


async def start_session(connection: ASGIConnection[Any, Any, Any, Any], api_key: str) -> Cookie:
    """A fresh session id for every sign-in, so an id planted earlier is never promoted."""
    store = _store(connection)
    old = connection.cookies.get(SESSION_COOKIE)
    if old:
        await store.delete(old)
    if isinstance(store, MemoryStore):
        await store.delete_expired()  # the memory store keeps expired entries until asked
    session_id = secrets.token_urlsafe(32)
    body = msgspec.json.encode({"key": api_key, "csrf": secrets.token_urlsafe(32)})
    await store.set(session_id, body, expires_in=SESSION_SECONDS)
    return _cookie(SESSION_COOKIE, session_id, SESSION_SECONDS, is_https(connection))


async def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Cookie:
    session_id = connection.cookies.get(SESSION_COOKIE)
    if session_id:
        await _store(connection).delete(session_id)
    return _cookie(SESSION_COOKIE, "", 0, is_https(connection))


def login_nonce_cookie(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, Cookie]:
    nonce = connection.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    return nonce, _cookie(LOGIN_COOKIE, nonce, LOGIN_SECONDS, is_https(connection))


def _same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    origin = connection.headers.get("origin")
    if origin is None or origin == "null":
        # old browsers send no Origin on same-site posts; the token still has to match
        return origin is None
    own = f"{connection.url.scheme}://{connection.url.netloc}"
    return hmac.compare_digest(origin.encode(), own.encode())


async def _sent_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    content_type, _ = request.content_type
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        value = form.get("_csrf")
        return value if isinstance(value, str) else ""
    return ""


class ConsoleSessionMiddleware:
    """Loads the session into ``scope["state"]`` and refuses unsafe requests without CSRF proof."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request: Request[Any, Any, Any] = Request(scope, receive)
        session = await load_session(request)
        scope.setdefault("state", {})["console_session"] = session
        if request.method not in SAFE_METHODS:
            if request.url.path == LOGIN_PATH:
                expected = request.cookies.get(LOGIN_COOKIE, "")
            else:
                expected = session.csrf_token if session else ""
            sent = await _sent_token(request)
            if not (
                _same_origin(request)
                and expected
                and sent
                and hmac.compare_digest(sent.encode(), expected.encode())
            ):
                raise CSRFRefused("this form is stale or did not come from the console")
        await self.app(scope, receive, send)


def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> ConsoleSession | None:
    session: ConsoleSession | None = connection.scope.get("state", {}).get("console_session")
    return session


async def require_console_session(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """The guard of every console page but sign-in: a live session with a valid key."""
    session = current_session(connection)
    if session is None:
        raise SignInRequired
    tenants: TenantService = connection.app.state.tenants
    try:
        connection.state.tenant_id = await tenants.authenticate(session.api_key)
    except Unauthenticated:
        await _store(connection).delete(session.session_id)
        raise SignInRequired from None


def sign_in_location(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    target = connection.url.path
    if connection.url.query:
        target += "?" + connection.url.query
    return f"{LOGIN_PATH}?next={quote(target, safe='')}"


def safe_next(value: str | None) -> str:
    """Only a console path is a place to go after sign-in (no open redirect)."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console/tasks"
