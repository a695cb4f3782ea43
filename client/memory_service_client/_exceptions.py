"""The client's exceptions: every failure a call can raise, in one tree.

    MemoryServiceError
    ├── TransportError            the request did not get an answer (wraps httpx errors)
    │   └── TimeoutError          ... because a timeout expired
    └── APIError                  the service answered with a problem document (4xx/5xx)
        ├── BadRequestError       400
        ├── AuthenticationError   401 (unknown, missing or revoked key)
        ├── NotFoundError         404 (also another tenant's row)
        ├── ConflictError         409
        ├── PreconditionFailedError 412 (a stale If-Match version)
        ├── PayloadTooLargeError  413
        ├── ValidationError       422
        ├── RateLimitedError      429
        └── ServerError           5xx
            └── ServiceUnavailableError 503

``APIError`` carries the RFC 9457 problem document as the service sent it, its
``trace_id`` (to find the request in the service's traces) and the field
``errors`` of a validation failure.
"""

from __future__ import annotations

from typing import Any, cast

import httpx

from memory_service_client._types import FieldError, Problem


class MemoryServiceError(Exception):
    """Base of every exception this client raises."""


class TransportError(MemoryServiceError):
    """The request got no answer: connection refused or reset, DNS, protocol error."""


class TimeoutError(TransportError):
    """A connect, read, write or pool timeout expired."""


class APIError(MemoryServiceError):
    """The service answered with an error status and (usually) a problem document."""

    status: int
    problem: Problem
    response: httpx.Response

    def __init__(self, response: httpx.Response, problem: Problem) -> None:
        self.status = response.status_code
        self.problem = problem
        self.response = response
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        super().__init__(f"{self.status}: {detail}")

    @property
    def trace_id(self) -> str | None:
        return self.problem.get("trace_id")

    @property
    def errors(self) -> list[FieldError]:
        return list(self.problem.get("errors") or [])

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or "")


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class PreconditionFailedError(APIError):
    pass


class PayloadTooLargeError(APIError):
    pass


class ValidationError(APIError):
    pass


class RateLimitedError(APIError):
    pass


class ServerError(APIError):
    pass


class ServiceUnavailableError(ServerError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> APIError:
    """The typed exception for an error response (its body read already)."""
    problem: Problem
    try:
        body: Any = response.json()
        problem = cast(Problem, body) if isinstance(body, dict) else {"detail": str(body)}
    except ValueError:
        problem = {"detail": response.text[:500]}
    problem.setdefault("status", response.status_code)
    if "trace_id" not in problem and "x-trace-id" in response.headers:
        problem["trace_id"] = response.headers["x-trace-id"]
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else APIError
    return cls(response, problem)


def wrap_transport(exc: httpx.TransportError) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(str(exc) or type(exc).__name__)
    return TransportError(str(exc) or type(exc).__name__)
