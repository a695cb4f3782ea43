"""What each step around a search costs, measured one by one in one process.

Each step runs many times in a loop and reports its median in microseconds, beside
a FAISS HNSW search of a 20,000-vector index (what the steps surround):

- decoding a search body with 384 floats (msgspec, as Litestar does);
- the thread hop that FAISS calls take (``anyio.to_thread.run_sync`` of a no-op);
- one OpenTelemetry span started and ended (SDK provider, no exporter: tracing "on"
  with nothing listening) and the same with the no-op API tracer (tracing "off");
- recording one request in the metrics (``ServiceMetrics.observe_request``);
- queueing the ``memory.searched`` event (``EventWriter.emit``; written later in a batch);
- checking 40 FAISS neighbours' rows in process (``RowCheck``) for a filtered search.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import msgspec
import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from api.search_schemas import SearchBody
from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.events.writer import EventWriter
from memory_service.infra.metrics import ServiceMetrics
from memory_service.infra.supervisor import Supervisor
from memory_service.memories.filters import compile_filter
from memory_service.memories.models import Memory, Scope
from memory_service.memories.predicate import RowCheck

ROUNDS = 2000


def median_us(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


async def median_us_async(fn: Callable[[], Awaitable[Any]], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def rows(n: int) -> list[Memory]:
    now = datetime.now(UTC)
    return [
        Memory(str(uuid.uuid4()), f"row {i}", f"u{i % 10}", None, None, None,
               {"s10": i % 10, "tag": "x"}, 0.5, now, now, None, 1, None, i)
        for i in range(n)
    ]


async def main() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(384, FaissParams(), hnsw=True)
    index.add(np.arange(20_000, dtype=np.int64), vectors)
    query = vectors[7]
    body = json.dumps({"embedding": query.tolist(), "k": 10, "user_id": "u1"}).encode()
    sdk = TracerProvider().get_tracer("bench")
    noop = trace.NoOpTracerProvider().get_tracer("bench")
    metrics = ServiceMetrics()
    writer = EventWriter(pool=None, supervisor=Supervisor(), queue_size=10**7)  # type: ignore[arg-type]  # never written
    held = rows(40)
    check = RowCheck.build(Scope(user_id="u1"), compile_filter({"metadata.s10": 1}))
    assert check is not None
    tenant = uuid.uuid4()

    def span(tracer: Any) -> None:
        tracer.start_span("x", attributes={"a": 1}).end()

    report = {
        "faiss_hnsw_search_20k_us": median_us(lambda: index.search(query, 10), 500),
        "decode_search_body_384_floats_us": median_us(
            lambda: msgspec.json.decode(body, type=SearchBody)
        ),
        "thread_hop_us": await median_us_async(lambda: anyio.to_thread.run_sync(lambda: None)),
        "otel_span_sdk_us": median_us(lambda: span(sdk)),
        "otel_span_noop_us": median_us(lambda: span(noop)),
        "metrics_observe_request_us": median_us(
            lambda: metrics.observe_request("POST", "/v1/memories/search", 200, 0.001, tenant_id=tenant)
        ),
        "event_emit_us": await median_us_async(
            lambda: writer.emit(tenant, "memory.searched", severity="debug", attributes={"k": 10})
        ),
        "row_check_40_rows_us": median_us(
            lambda: [r for r in held if check.matches(r, datetime.now(UTC))]
        ),
    }
    report = {k: round(v, 1) for k, v in report.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
