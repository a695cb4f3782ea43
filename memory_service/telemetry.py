"""OpenTelemetry set-up: one tracer provider per service, exporter chosen by settings.

``none`` (the default) still records spans, so trace ids exist for problem
documents and events; ``console`` prints them; ``otlp`` sends them over HTTP to
``MEMORY_OTLP_ENDPOINT``. Database calls are traced by the psycopg
instrumentation, which patches the driver once per process.
"""

from __future__ import annotations

import logging
import secrets
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

from memory_service.config import Settings

log = logging.getLogger(__name__)
_psycopg_instrumented = False


def build_tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
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

    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _psycopg_instrumented = True


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or a fresh random one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return secrets.token_hex(16)
