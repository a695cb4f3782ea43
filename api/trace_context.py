"""Trace context for a service that exports no spans.

With ``MEMORY_TRACE_EXPORTER=none`` nothing reads a recorded span, yet events and
problem documents still carry the request's trace id, continuing the caller's W3C
``traceparent`` when there is one. The OpenTelemetry ASGI instrumentation does that
too, but collects a dozen request attributes and wraps every ASGI message on the
way; this middleware only extracts the caller's context and opens one span (which
the provider's always-off sampler leaves unrecorded) around the request, about a
tenth of the instrumentation's cost.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import propagate, trace

_CARRIED = (b"traceparent", b"tracestate")
UNTRACED = frozenset({"/health"})  # as the full instrumentation is configured


class TraceContextMiddleware:
    def __init__(self, app: ASGIApp, tracer_provider: trace.TracerProvider) -> None:
        self.app = app
        self.tracer = trace.get_tracer("memory_service.http", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CARRIED
        }
        context = propagate.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span(
            "http request", context=context, kind=trace.SpanKind.SERVER
        ):
            await self.app(scope, receive, send)
