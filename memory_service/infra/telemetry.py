"""OpenTelemetry set-up: one tracer provider per service, exporter chosen by settings.

``none`` (the default) records nothing, but its spans still carry trace ids (a
caller's, or fresh ones) for problem documents and events; ``console`` prints spans;
``otlp`` sends them over HTTP to ``MEMORY_OTLP_ENDPOINT``. Database calls are traced
by the psycopg instrumentation, which patches the driver once per process, and only
once an app records spans (unrecorded, a span per query would only cost time). Its
spans go to the provider of the app that is serving the current request or running
the current background task (``use_tracer_provider``), so two apps in one process
(tests, embedded use) each see their own database spans.
"""

from __future__ import annotations

import logging
import secrets
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from memory_service.config import Settings

log = logging.getLogger(__name__)
_psycopg_instrumented = False
_active_provider: ContextVar[trace.TracerProvider | None] = ContextVar(
    "memory_service_tracer_provider", default=None
)


def use_tracer_provider(provider: trace.TracerProvider) -> Token[trace.TracerProvider | None]:
    """Make ``provider`` receive the database spans of this context (a request, a task)."""
    return _active_provider.set(provider)


def reset_tracer_provider(token: Token[trace.TracerProvider | None]) -> None:
    _active_provider.reset(token)


class _RoutingTracer(trace.Tracer):
    """Starts each span with the tracer of the context's provider (else the fallback)."""

    def __init__(self, fallback: trace.TracerProvider, name: str, version: str | None) -> None:
        self._fallback = fallback
        self._name = name
        self._version = version

    def _target(self) -> trace.Tracer:
        provider = _active_provider.get() or self._fallback
        return provider.get_tracer(self._name, self._version)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._target().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().start_as_current_span(*args, **kwargs)


class _RoutingTracerProvider(trace.TracerProvider):
    def __init__(self, fallback: trace.TracerProvider) -> None:
        self._fallback = fallback

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> trace.Tracer:
        return _RoutingTracer(
            self._fallback, instrumenting_module_name, instrumenting_library_version
        )


def build_tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider:
    resource = Resource.create({"service.name": settings.service_name})
    if exporter is None and settings.trace_exporter in ("none", "off"):
        # nothing would read a recorded span: spans still carry trace ids (a caller's,
        # or fresh ones) for events and log lines, but record nothing
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.trace_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.trace_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kwargs: dict[str, Any] = {}
        if settings.otlp_endpoint:
            kwargs["endpoint"] = settings.otlp_endpoint
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**kwargs)))
    return provider


def instrument_psycopg(provider: TracerProvider) -> None:
    """Trace every database call (once per process: the instrumentation is global)."""
    global _psycopg_instrumented
    if _psycopg_instrumented:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument(
        tracer_provider=_RoutingTracerProvider(provider), skip_dep_check=True
    )
    _psycopg_instrumented = True


def records_spans(provider: trace.TracerProvider | None) -> bool:
    """Whether a span started through ``provider`` may be recorded: never with tracing
    off (the no-op provider) or with ``none`` (the always-off sampler)."""
    if isinstance(provider, trace.NoOpTracerProvider):
        return False
    return not (isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF)


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or a fresh random one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return secrets.token_hex(16)
