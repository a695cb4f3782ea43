"""Every error leaves the service as an RFC 9457 problem document.

Domain errors (``memory_service.errors``) map to one status each (a 412 also
carries the entity as it is now, under ``current``, and its ``ETag``); Litestar's
own HTTP exceptions (bad JSON, validation, unknown route, body too large) keep
their status but get the same shape. Anything else is a 500 whose body says
nothing about the internals; the trace id in it finds the logged stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.input_guard import choices_at
from api.routes.environments import EnvironmentOut
from api.routes.execution_schemas import ExecutionOut
from api.routes.tasks import TaskOut
from api.schemas import MemoryOut
from memory_service import errors as domain
from memory_service.executions.models import Execution
from memory_service.infra.telemetry import current_trace_id
from memory_service.memories.models import Memory
from memory_service.records.environments import Environment
from memory_service.records.task_models import Task

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS: list[tuple[type[domain.MemoryServiceError], int]] = [
    (domain.InvalidFilter, 422),
    (domain.InvalidInput, 422),
    (domain.Unauthenticated, 401),
    (domain.Forbidden, 403),
    (domain.NotFound, 404),
    (domain.Conflict, 409),
    (domain.Gone, 410),
    (domain.PreconditionFailed, 412),
    (domain.PayloadTooLarge, 413),
    (domain.RateLimited, 429),
    (domain.Unavailable, 503),
]
TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"https://memory-service.dev/problems/{status}",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "trace_id": current_trace_id(),
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, domain.MemoryServiceError)
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    headers = None
    if isinstance(exc, domain.Unavailable | domain.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    extra = None
    if isinstance(exc, domain.PreconditionFailed) and exc.current is not None:
        # the entity as it is now, so the client can merge without another read
        current = current_document(exc.current)
        extra = {"current": current}
        headers = {"ETag": f'"{current["version"]}"'}
    errors = [{"field": e.field, "message": e.message} for e in exc.errors]
    if status in (400, 422) and not errors:
        errors = [{"field": "body", "message": exc.detail}]
    return problem(
        status, exc.detail, title=exc.title, errors=errors or None, headers=headers, extra=extra
    )


def current_document(entity: object) -> dict[str, Any]:
    """The public JSON shape of an entity a 412 answer carries."""
    out: Any
    if isinstance(entity, Memory):
        out = MemoryOut.of(entity)
    elif isinstance(entity, Task):
        out = TaskOut.of(entity)
    elif isinstance(entity, Environment):
        out = EnvironmentOut.of(entity)
    elif isinstance(entity, Execution):
        out = ExecutionOut.of(entity)
    else:
        raise TypeError(f"no public shape for {type(entity).__name__}")
    document: dict[str, Any] = msgspec.to_builtins(out)
    return document


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if isinstance(exc, ValidationException):
        errors = [_with_choices(request, e) for e in _validation_errors(exc.extra)]
        detail = _validation_detail(exc.detail, errors)
        return problem(400, detail, title="Malformed request", errors=errors)
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
        return problem(status, TITLES.get(status, "Server error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else TITLES.get(status, "")
    fields = [{"field": "body", "message": detail}] if status in (400, 422) else None
    return problem(status, detail, errors=fields, headers=exc.headers)


def unicode_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # raised while decoding a request body that is not UTF-8
    return problem(
        400,
        "the request body is not valid UTF-8",
        title="Malformed request",
        errors=[{"field": "body", "message": "invalid UTF-8"}],
    )


def unexpected_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "an unexpected error occurred; quote the trace_id when reporting it")


def _validation_errors(extra: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    items = extra if isinstance(extra, list) else [extra] if extra else []
    for item in items:
        if isinstance(item, dict):
            field = str(item.get("key") or item.get("field") or "body")
            message = str(item.get("message") or "invalid")
            if item.get("source") and field == "body" and item.get("source") != "body":
                field = str(item["source"])
            out.append({"field": _clean_field(field), "message": message})
    return out or [{"field": "body", "message": "the request could not be read"}]


def _with_choices(request: Request[Any, Any, Any], error: dict[str, str]) -> dict[str, str]:
    """A refused enum value of a parameter gets the values it may take."""
    if not error["message"].startswith("Invalid enum value") or "must be one of" in error["message"]:
        return error
    signature = getattr(request.scope.get("route_handler"), "parsed_fn_signature", None)
    for name, field in (signature.parameters if signature is not None else {}).items():
        definition = field.kwarg_definition
        alias = getattr(definition, "query", None) or getattr(definition, "header", None) or name
        if error["field"] in (name, alias):
            choices = choices_at(field.annotation, "")
            if choices:
                values = ", ".join(str(c) for c in choices if c is not None)
                return {**error, "message": f"{error['message']}; must be one of {values}"}
    return error


def _clean_field(field: str) -> str:
    # msgspec paths look like "$.items[3].content"
    return field[2:] if field.startswith("$.") else field


def _validation_detail(detail: Any, errors: list[dict[str, str]]) -> str:
    first = errors[0]
    return f"{first['field']}: {first['message']}"


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    domain.MemoryServiceError: domain_error_handler,
    HTTPException: http_error_handler,
    UnicodeDecodeError: unicode_error_handler,
    Exception: unexpected_error_handler,
}
