"""Makes the generated OpenAPI document tell the whole truth about errors and limits.

Litestar documents each route's success answer and a generic 400. Every route
here can also answer with the problem documents of ``api.errors`` (401 without a
key, 415 for a body that is not JSON, 422 for a value the service refuses, 429
over the tenant's rate, 503 while the database is down, ...), always as
``application/problem+json``. ``document_problems`` adds those answers to every
operation after the document is generated, by the same rules the guards and the
error map apply, so a new route is described without doing anything; the value
rules of requests are stated by ``api.contract`` once the model is loaded. Strict
request bodies get ``additionalProperties: false``; event streams are described
as ``text/event-stream`` and other non-JSON answers by their media type; the
limits from the settings go into the description. ``AllowHeaderMiddleware``
makes the automatic ``OPTIONS`` answer list every method of a path: Litestar
builds that answer before all of a controller's handlers are merged into a route.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.middleware import ASGIMiddleware
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIResponse,
    Reference,
    Schema,
)
from litestar.openapi.spec.media_type import OpenAPIMediaType
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_JSON, TITLES
from api.input_guard import MAX_JSON_DEPTH
from api.limits import STREAMED_BODY_OPTION, slot_kind
from api.schemas import Strict
from memory_service.config import Settings

PROBLEM = Schema(
    type="object",  # type: ignore[arg-type]
    required=["type", "title", "status", "detail", "trace_id"],
    properties={
        "type": Schema(type="string"),  # type: ignore[arg-type]
        "title": Schema(type="string"),  # type: ignore[arg-type]
        "status": Schema(type="integer"),  # type: ignore[arg-type]
        "detail": Schema(type="string"),  # type: ignore[arg-type]
        "trace_id": Schema(type="string"),  # type: ignore[arg-type]
        "errors": Schema(
            type="array",  # type: ignore[arg-type]
            items=Schema(
                type="object",  # type: ignore[arg-type]
                required=["field", "message"],
                properties={
                    "field": Schema(type="string"),  # type: ignore[arg-type]
                    "message": Schema(type="string"),  # type: ignore[arg-type]
                },
            ),
        ),
    },
    description="RFC 9457 problem document; `errors` names the fields of a 400 or 422",
)
WHY = {
    400: "Malformed request: not JSON, nested too deep, a wrong type or an unknown field",
    401: "Missing or unknown API key / admin token",
    403: "Admin endpoints are disabled (no admin token configured) or the feature is off",
    404: "No such row for this tenant (another tenant's rows look the same)",
    410: "The cursor is older than the change feed keeps: take a snapshot",
    409: "The change contradicts the current state",
    412: "If-Match names a stale version",
    413: "The body or a field is over its configured limit",
    415: "A body sent without the media type the operation takes (application/json for JSON bodies)",
    422: "A value the service refuses (named in `errors`)",
    429: (
        "The tenant (or, without a valid key, the client address) is over its request rate or "
        "in-flight share, or holds all its stream/long-poll slots; see Retry-After"
    ),
    500: "An unexpected error; quote the trace_id",
    503: "The database or the model is unavailable; see Retry-After",
}


def _statuses(path: str, method: str, has_body: bool) -> set[int]:
    # 429 everywhere: admission at the front turns a request away past its party's rate or
    # share, and a request without a valid key (a wrong admin token too) counts against
    # its client address
    codes = {429, 500}
    if not path.startswith("/v1"):
        return codes | ({503} if path == "/ready" else set())
    codes |= {400, 401, 403, 404, 422, 503}
    if path.startswith("/v1/changes"):
        codes |= {410}  # a cursor older than the feed keeps
    if has_body:
        codes |= {413, 415}
    if method in ("post", "put", "patch", "delete"):
        codes |= {409, 412}
    return codes


def _problem_response(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=WHY.get(status, TITLES.get(status, "Error")),
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
    )


def document_problems(app: Litestar, settings: Settings) -> None:
    """Complete ``app``'s (cached) OpenAPI document; call once after building the app."""
    document: OpenAPI = app.openapi_schema
    components = document.components
    assert components is not None and components.schemas is not None
    components.schemas["Problem"] = PROBLEM
    for name in _strict_names():
        schema = components.schemas.get(name)
        if isinstance(schema, Schema):
            schema.additional_properties = False
    streams = _stream_paths(app)
    media = _media_types(app)
    streamed = _streamed_bodies(app)
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses = operation.responses or {}
            # a route that reads its own body stream takes a body all the same (its media
            # type is in its description: the generators here cannot write NDJSON)
            has_body = operation.request_body is not None or (path, method) in streamed
            for status in sorted(_statuses(path, method, has_body)):
                responses[str(status)] = _problem_response(status)
            ok = responses.get("200")
            if path in streams and isinstance(ok, OpenAPIResponse):
                ok.content = {"text/event-stream": OpenAPIMediaType()}  # each route's own events
            elif media.get((path, method)) and isinstance(ok, OpenAPIResponse):
                ok.content = {media[(path, method)]: OpenAPIMediaType(schema=Schema(type="string"))}  # type: ignore[arg-type]
    document.info.description = (document.info.description or "") + _limits(settings)


def _strict_names() -> set[str]:
    found: set[str] = set()
    todo: list[type[Any]] = [Strict]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.add(sub.__name__)
            todo.append(sub)
    return found


def _stream_paths(app: Litestar) -> set[str]:
    out: set[str] = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if slot_kind(handler) == "stream":
                    out.add(route.path_format)
    return out


def _streamed_bodies(app: Litestar) -> dict[tuple[str, str], tuple[str, ...]]:
    """(path, method) -> the media types of the routes that read their body as a stream."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                media = handler.opt.get(STREAMED_BODY_OPTION)
                if media:
                    for method in handler.http_methods:
                        out[(route.path_format, method.lower())] = tuple(media)
    return out


def _media_types(app: Litestar) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                media = str(getattr(handler.media_type, "value", handler.media_type))
                if "json" not in media:
                    for method in handler.http_methods:
                        out[(route.path_format, method.lower())] = media.split(";")[0]
    return out


def allowed_methods(app: Litestar) -> dict[str, str]:
    """Path template -> the ``Allow`` value listing every method of that path."""
    out: dict[str, str] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            value = ", ".join(sorted(route.methods))
            out[route.path] = out[route.path_format] = value
    return out


class AllowHeaderMiddleware(ASGIMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] != "http" or scope.get("method") != "OPTIONS":
            await next_app(scope, receive, send)
            return
        table = scope["app"].state.get("allowed_methods") or {}
        allow = table.get(str(scope.get("path_template") or ""))

        async def send_with_allow(message: Message) -> None:
            if allow and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow.encode())]}
            await send(message)

        await next_app(scope, receive, send_with_allow)


def _limits(settings: Settings) -> str:
    return (
        "\n\n## Limits\n"
        f"- request bodies: JSON only (`application/json`, else 415), at most "
        f"{settings.tenant_max_request_bytes} bytes per tenant request (413), nested at most "
        f"{MAX_JSON_DEPTH} arrays/objects deep (400); the same depth holds for `?filter=`.\n"
        "- strict types: a string is never read as a number; unknown fields are refused (400).\n"
        "- NUL characters, non-zero numbers smaller than 1e-30 in magnitude and times outside "
        "years 1..9999 in UTC are refused (422).\n"
        f"- per tenant and process: {settings.tenant_requests_per_second:g} requests/s "
        f"(burst {settings.tenant_request_burst}), {settings.tenant_max_in_flight} requests in "
        f"flight (more wait up to {settings.tenant_queue_wait_ms:g} ms for a place), "
        f"{settings.tenant_max_streams} open event streams, {settings.tenant_max_long_polls} "
        "long polls (`POST /v1/workers/claim` with `wait_s`); per client address, for requests "
        f"without a valid key: {settings.anonymous_requests_per_second:g} requests/s, "
        f"{settings.anonymous_max_in_flight} in flight; over them: 429 with Retry-After, "
        "decided before the body is read.\n"
        f"- memories: content up to {settings.max_content_bytes} bytes, metadata up to "
        f"{settings.max_metadata_bytes} bytes, batches up to {settings.max_batch_items} items.\n"
    )
