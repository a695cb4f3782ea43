"""What the sync and async clients share: a call, the retry policy, the registry.

An operation of the HTTP API is declared once, as a function that builds a
``Call`` (method, path, query, body, whether it is idempotent) and is registered
under its OpenAPI method and path with ``@operation``. Both clients only send
calls, so the sync and async flavours cannot drift apart, and a test compares
the registry with the live OpenAPI document.

Retries: a call is retried only when it is idempotent (GET, PUT, DELETE, and
POSTs that only read, such as search) and the answer was 429 or 503 or no
answer came; the wait honours ``Retry-After`` (seconds or an HTTP date) and
otherwise backs off exponentially with jitter.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import httpx

from memory_service_client._exceptions import error_for

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    idempotent: bool = False
    admin: bool = False
    # "json": the decoded body; "none": nothing (204); "text": the body as text
    result: str = "json"
    content: bytes | None = None  # a body sent as is (with its Content-Type in headers)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    method: str
    path: str


OPERATIONS: dict[str, Operation] = {}


def operation(
    method: str, path: str, *, idempotent: bool | None = None, admin: bool = False
) -> Callable[[Callable[P, Call]], Callable[P, Call]]:
    """Register a call builder as the client's implementation of ``method path``.

    The builder's ``Call`` gets the method, idempotency and admin flag from here;
    the builder fills in the concrete path, query and body.
    """
    method = method.upper()
    safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent

    def register(build: Callable[P, Call]) -> Callable[P, Call]:
        OPERATIONS[build.__name__] = Operation(build.__name__, method, path)

        def builder(*args: P.args, **kwargs: P.kwargs) -> Call:
            call = build(*args, **kwargs)
            return Call(
                method,
                call.path,
                call.params,
                call.json,
                call.headers,
                safe,
                admin,
                call.result,
                call.content,
            )

        builder.__name__ = build.__name__
        builder.__doc__ = build.__doc__
        return builder

    return register


def segment(value: str) -> str:
    """One path segment, percent-encoded (a ``/`` inside stays inside)."""
    return quote(str(value), safe="")


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the ``None`` ones."""
    return {k: v for k, v in params.items() if v is not None}


def body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of idempotent calls on 429/503 and on calls that got no answer."""

    retries: int = 3
    backoff: float = 0.25  # first wait; doubles each try
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))

    def should_retry(self, call: Call, attempt: int, status: int | None) -> bool:
        if not call.idempotent or attempt >= self.retries:
            return False
        return status is None or status in self.statuses

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next try; None: do not retry (Retry-After too long)."""
        if response is not None and "retry-after" in response.headers:
            wait = retry_after_seconds(response.headers["retry-after"])
            if wait is not None:
                return wait if wait <= self.max_retry_after else None
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base / 2 + random.uniform(0, base / 2)


NO_RETRIES = RetryPolicy(retries=0)


def retry_after_seconds(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def build_request(http: httpx.Client | httpx.AsyncClient, call: Call, admin_token: str | None) -> httpx.Request:
    headers = dict(call.headers) if call.headers else {}
    if call.admin:
        if admin_token is None:
            raise ValueError("this operation needs the client's admin_token")
        headers["Authorization"] = f"Bearer {admin_token}"
    return http.build_request(
        call.method,
        call.path,
        params=call.params,
        json=call.json,
        content=call.content,
        headers=headers or None,
    )


def decode(call: Call, response: httpx.Response) -> Any:
    """The result of a finished response (body read), or the typed exception."""
    if response.status_code >= 400:
        raise error_for(response)
    if call.result == "none" or response.status_code == 204:
        return None
    if call.result == "text":
        return response.text
    return response.json()


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": "memory-service-client/0.1", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers
