"""Console sessions and CSRF: who is signed in, and proof that a form came from the console.

Signing in exchanges a tenant API key for a random session id. The session lives
in PostgreSQL (``ConsoleSessionStore``: the key's prefix and a per-session CSRF
token, under a hash of the id), so any replica behind a proxy serves any request;
the browser holds only the id, in an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/console``. A session loads only while its key is unrevoked, and every
unsafe request must echo the session's CSRF token, in the ``_csrf`` form field or
the ``X-CSRF-Token`` header (the synchronizer-token pattern). The sign-in form,
which has no session yet, is protected by a double-submit nonce in a short-lived
cookie. A cross-site ``Origin`` is refused outright on unsafe requests; behind a
proxy, ``MEMORY_PUBLIC_URL`` names the one origin that is the console's own.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import quote

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from memory_service.config import Settings, public_origin
from memory_service.records.console_sessions import (
    SESSION_SECONDS,
    ConsoleSession,
    ConsoleSessionStore,
)

SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
LOGIN_SECONDS = 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/console/login"
STATIC_PATH = "/console/static/"


class SignInRequired(Exception):
    """No valid session: the console answers with a redirect to the sign-in page."""


class CSRFRefused(Exception):
    """An unsafe request without the right CSRF token, or from another site."""


def sessions(connection: ASGIConnection[Any, Any, Any, Any]) -> ConsoleSessionStore:
    store: ConsoleSessionStore = connection.app.state.runtime.console_sessions
    return store


def _public_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    settings: Settings = connection.app.state.settings
    return public_origin(settings.public_url) if settings.public_url else None


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
    public = _public_origin(connection)
    if public is not None:
        return public.startswith("https:")
    return connection.url.scheme == "https"


async def load_session(connection: ASGIConnection[Any, Any, Any, Any]) -> ConsoleSession | None:
    session_id = connection.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    return await sessions(connection).load(session_id)


async def start_session(
    connection: ASGIConnection[Any, Any, Any, Any], api_key: str
) -> Cookie | None:
    """A fresh session id for every sign-in, so an id planted earlier is never promoted;
    None when the key stopped being valid meanwhile."""
    session = await sessions(connection).open(
        api_key, replacing=connection.cookies.get(SESSION_COOKIE)
    )
    if session is None:
        return None
    return _cookie(SESSION_COOKIE, session.session_id, SESSION_SECONDS, is_https(connection))


async def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Cookie:
    session_id = connection.cookies.get(SESSION_COOKIE)
    if session_id:
        await sessions(connection).close(session_id)
    return _cookie(SESSION_COOKIE, "", 0, is_https(connection))


def login_nonce_cookie(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, Cookie]:
    nonce = connection.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    return nonce, _cookie(LOGIN_COOKIE, nonce, LOGIN_SECONDS, is_https(connection))


def _same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    origin = connection.headers.get("origin")
    if origin is None or origin == "null":
        # old browsers send no Origin on same-site posts; the token still has to match
        return origin is None
    own = _public_origin(connection) or f"{connection.url.scheme}://{connection.url.netloc}"
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
        if request.url.path.startswith(STATIC_PATH):
            await self.app(scope, receive, send)  # no session to load for a stylesheet
            return
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
    if session is None:  # none, expired, or its key revoked
        raise SignInRequired
    connection.state.tenant_id = session.tenant_id


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
