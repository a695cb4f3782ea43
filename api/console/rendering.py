"""How console pages answer: full pages, htmx fragments, redirects and error pages.

Every page is rendered on the server from ``api/console/templates``; htmx asks
for fragments of the same templates (it sends ``HX-Request``). Errors of the
core become an HTML page with the same status the API would use, so a missing
row and another tenant's row look alike here too (404).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from api.console.session import CSRFRefused, SignInRequired, current_session, sign_in_location
from api.errors import STATUS, TITLES
from memory_service import errors as domain

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = [
    ("tasks", "Tasks", "/console/tasks"),
    ("environments", "Environments", "/console/environments"),
    ("events", "Events", "/console/events"),
    ("executions", "Executions", "/console/executions"),
    ("memories", "Memories", "/console/memories"),
    ("migration", "Migration", "/console/migration"),
    ("health", "Health", "/console/health"),
]


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def page(
    request: Request[Any, Any, Any], name: str, *, status_code: int = 200, **context: Any
) -> Template:
    session = current_session(request)
    context.setdefault("csrf", session.csrf_token if session else "")
    context.setdefault("signed_in", session is not None)
    context.setdefault("nav", NAV)
    return Template(template_name=name, context=context, status_code=status_code)


def see_other(location: str) -> Redirect:
    return Redirect(path=location, status_code=303)


def status_of(exc: domain.MemoryServiceError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def error_page(request: Request[Any, Any, Any], status: int, detail: str) -> Response[Any]:
    if is_htmx(request):
        return Response(detail, status_code=status, media_type="text/plain")
    return page(
        request,
        "error.html",
        status_code=status,
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
    )


def on_sign_in_required(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    location = sign_in_location(request)
    if is_htmx(request):
        return Response("", status_code=401, headers={"HX-Redirect": location})
    return see_other(location)


def on_csrf_refused(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return error_page(request, 403, str(exc))


def on_domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, domain.MemoryServiceError)
    return error_page(request, status_of(exc), exc.detail)


def on_http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    detail = exc.detail if status < 500 and isinstance(exc.detail, str) else ""
    return error_page(request, status, detail or TITLES.get(status, "Error"))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error in the console", exc_info=exc)
    return error_page(request, 500, "Something went wrong on our side; the log has the details.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    SignInRequired: on_sign_in_required,
    CSRFRefused: on_csrf_refused,
    domain.MemoryServiceError: on_domain_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
