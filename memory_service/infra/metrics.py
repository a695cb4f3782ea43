"""The service's own metrics: Prometheus exposition and windowed summaries.

``ServiceMetrics`` owns one ``CollectorRegistry`` per app (never the global
one), request counters and latency histograms labelled by route *template*
(``/v1/memories/{memory_id}``, never a raw path, so no tenant data reaches a
label), per-stage timings of requests (``stages.py``), embedding timings, and a collector that reads live state at scrape time:
pool, circuit breakers, embedding cache, event writer and streams, indexes.
It also keeps this process's recent request samples (up to an hour, bounded per
operation) for ``summary`` (count, error rate and p50/p95/p99 per operation over
a window), which ``health.py`` reads for its score; with several processes, each
reports its own.

An index reports its freshness through a zero-argument callable in
``Runtime.index_status[name]`` that returns a mapping with optional ``size``
(int), ``lag_seconds`` (float: how far it trails the database) and ``backlog`` (int:
rows waiting to enter it) and ``rows_skipped`` (index name -> stored rows it could not
hold, reported as ``memory_index_rows_skipped_total``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from memory_service.infra.resilience import STATE_CODES

MAX_WINDOW_SECONDS = 3600.0
MAX_SAMPLES_PER_OPERATION = 50_000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# a stage of a fast request takes tens of microseconds
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5
)
IndexStatus = Callable[[], Mapping[str, Any]]
Sample = tuple[float, float, int, uuid.UUID | None]


@dataclass(slots=True)
class OperationSummary:
    operation: str
    count: int
    errors: int
    client_errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float



class ServiceMetrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "memory_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "memory_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "memory_http_request_stage_seconds",
            "Time a request spent in each stage (memory_service.infra.stages)",
            ["method", "route", "stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.embedding_seconds = Histogram(
            "memory_embedding_batch_duration_seconds",
            "Time to embed one batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embedding_texts = Counter(
            "memory_embedding_texts", "Texts embedded", registry=self.registry
        )
        self.embedding_errors = Counter(
            "memory_embedding_errors", "Embedding batches that failed", registry=self.registry
        )
        # (time, seconds, status, tenant id or None): tenants only ever see their own
        self._samples: dict[str, deque[Sample]] = defaultdict(
            lambda: deque(maxlen=MAX_SAMPLES_PER_OPERATION)
        )
        self._lock = threading.Lock()
        self._runtime: Any = None
        self.registry.register(_RuntimeCollector(self))

    def attach(self, runtime: Any) -> None:
        self._runtime = runtime

    # -- recording ---------------------------------------------------------------------
    def observe_request(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        *,
        streaming: bool = False,
        tenant_id: uuid.UUID | None = None,
    ) -> None:
        """Count a request; a long-lived stream is counted but kept out of the latencies."""
        self.requests.labels(method, route, str(status)).inc()
        if streaming:
            return
        self.request_seconds.labels(method, route).observe(seconds)
        with self._lock:
            self._samples[f"{method} {route}"].append((self._clock(), seconds, status, tenant_id))

    def observe_stages(self, method: str, route: str, seconds: Mapping[str, float]) -> None:
        for stage, spent in seconds.items():
            self.stage_seconds.labels(method, route, stage).observe(spent)

    def observe_embedding(self, texts: int, seconds: float, failed: bool) -> None:
        self.embedding_seconds.observe(seconds)
        self.embedding_texts.inc(texts)
        if failed:
            self.embedding_errors.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- summaries ---------------------------------------------------------------------
    def summary(
        self, window_seconds: float, tenant_id: uuid.UUID | None = None
    ) -> list[OperationSummary]:
        """Per operation over the window; only ``tenant_id``'s requests when given."""
        since = self._clock() - min(window_seconds, MAX_WINDOW_SECONDS)
        with self._lock:
            snapshot = {
                op: [
                    s for s in samples if s[0] >= since and (tenant_id is None or s[3] == tenant_id)
                ]
                for op, samples in self._samples.items()
            }
        out = []
        for op, samples in sorted(snapshot.items()):
            if samples:
                out.append(_summarise(op, samples))
        return out

    def overall(self, window_seconds: float) -> OperationSummary | None:
        since = self._clock() - min(window_seconds, MAX_WINDOW_SECONDS)
        with self._lock:
            samples = [s for ss in self._samples.values() for s in ss if s[0] >= since]
        return _summarise("all", samples) if samples else None


def _summarise(op: str, samples: list[Sample]) -> OperationSummary:
    durations = np.fromiter((s[1] for s in samples), dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(durations, [50, 95, 99])
    errors = sum(1 for s in samples if s[2] >= 500)
    client = sum(1 for s in samples if 400 <= s[2] < 500)
    return OperationSummary(
        op,
        len(samples),
        errors,
        client,
        errors / len(samples),
        round(float(p50), 3),
        round(float(p95), 3),
        round(float(p99), 3),
    )


def index_statuses(runtime: Any) -> dict[str, Mapping[str, Any]]:
    reporters = getattr(runtime, "index_status", None) or {}
    out: dict[str, Mapping[str, Any]] = {}
    for name, report in dict(reporters).items():
        try:
            out[str(name)] = dict(report())
        except Exception as exc:
            out[str(name)] = {"error": type(exc).__name__}
    return out


class _RuntimeCollector(Collector):
    """Reads live state at scrape time; labels are fixed names, never tenant data."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        runtime = self._metrics._runtime
        if runtime is None:
            return
        pool = runtime.pool
        stats = pool.get_stats()
        gauge = GaugeMetricFamily(
            "memory_db_pool_connections", "Pool connections", labels=["state"]
        )
        gauge.add_metric(["size"], stats.get("pool_size", 0))
        gauge.add_metric(["available"], stats.get("pool_available", 0))
        gauge.add_metric(["waiting"], stats.get("requests_waiting", 0))
        yield gauge
        errors = CounterMetricFamily("memory_db_pool_errors", "Pool errors", labels=["kind"])
        errors.add_metric(["request"], stats.get("requests_errors", 0))
        errors.add_metric(["connection"], stats.get("connections_errors", 0))
        errors.add_metric(["connection_lost"], stats.get("connections_lost", 0))
        yield errors
        state = GaugeMetricFamily(
            "memory_circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            labels=["dependency"],
        )
        opened = CounterMetricFamily(
            "memory_circuit_opened", "Times a breaker opened", labels=["dependency"]
        )
        rejected = CounterMetricFamily(
            "memory_circuit_rejected", "Calls refused while open", labels=["dependency"]
        )
        for breaker in breakers(runtime):
            state.add_metric([breaker.name], STATE_CODES[breaker.state])
            opened.add_metric([breaker.name], breaker.times_opened)
            rejected.add_metric([breaker.name], breaker.rejected)
        yield state
        yield opened
        yield rejected
        yield from _replica_metrics(runtime)
        refused = CounterMetricFamily(
            "memory_requests_refused",
            "Requests answered 429 by fair sharing, by the limit they met",
            labels=["limit"],
        )
        for limit, count in runtime.limiter.refused.items():
            refused.add_metric([limit], count)
        yield refused
        foreground = runtime.foreground
        yield GaugeMetricFamily(
            "memory_requests_in_flight",
            "Requests being served (streams and long polls apart): background work yields to them",
            value=foreground.in_flight,
        )
        yield CounterMetricFamily(
            "memory_background_pause_seconds",
            "Time background index work waited for the requests in flight",
            value=foreground.paused_s,
        )
        cache = CounterMetricFamily(
            "memory_embedding_cache", "Query embedding cache look-ups", labels=["result"]
        )
        cache.add_metric(["hit"], runtime.embedder.hits)
        cache.add_metric(["miss"], runtime.embedder.misses)
        yield cache
        writer = runtime.event_writer
        if writer is not None:
            written = CounterMetricFamily(
                "memory_service_events", "Service events by outcome", labels=["outcome"]
            )
            written.add_metric(["written"], writer.written)
            written.add_metric(["dropped"], writer.dropped)
            yield written
            dropped = CounterMetricFamily(
                "memory_events_dropped", "Service events dropped, by reason", labels=["reason"]
            )
            for reason, count in writer.dropped_by.items():
                dropped.add_metric([reason], count)
            yield dropped
            yield GaugeMetricFamily(
                "memory_service_events_pending", "Service events queued", value=writer.pending
            )
        outbox = runtime.event_outbox
        if outbox is not None:
            yield CounterMetricFamily(
                "memory_event_outbox_moved",
                "Staged events (workflow progress) moved from the outbox into the log",
                value=outbox.moved,
            )
            yield CounterMetricFamily(
                "memory_event_outbox_retries",
                "Outbox mover passes that found the database away and retried",
                value=outbox.retries,
            )
        completions = runtime.workflows.workers.completions
        settled = CounterMetricFamily(
            "memory_workflow_completions",
            "Step completions settled together: transactions they took, completions, and "
            "batches whose transaction failed and were settled one by one",
            labels=["what"],
        )
        settled.add_metric(["batches"], completions.batches)
        settled.add_metric(["completions"], completions.completions)
        settled.add_metric(["fallbacks"], completions.fallbacks)
        yield settled
        yield from runtime.supervisor.metric_families()
        fanout = runtime.event_fanout
        if fanout is not None:
            yield GaugeMetricFamily(
                "memory_event_streams", "Open event streams", value=fanout.stream_count
            )
            yield GaugeMetricFamily(
                "memory_event_fanout_connected",
                "1 while this process listens for new events on the database",
                value=1 if fanout.connected else 0,
            )
        size = GaugeMetricFamily("memory_index_size", "Vectors in an index", labels=["index"])
        lag = GaugeMetricFamily(
            "memory_index_lag_seconds", "How far an index trails the database", labels=["index"]
        )
        held = GaugeMetricFamily(
            "memory_index_bytes", "Memory an in-process index holds", labels=["index"]
        )
        scopes = GaugeMetricFamily(
            "memory_scope_indexes", "Scopes searched in a graph of their own", labels=["index"]
        )
        backlog = GaugeMetricFamily(
            "memory_index_backlog",
            "Rows waiting to enter an index (the span of their sequence numbers: 0 when none)",
            labels=["index"],
        )
        skipped = CounterMetricFamily(
            "memory_index_rows_skipped",
            "Stored rows an in-process index could not hold (searches answer them another way)",
            labels=["index"],
        )
        probes = CounterMetricFamily(
            "memory_index_probes",
            "Index probes that left the event loop, and the calls they took (probes that "
            "arrive together run as one batch)",
            labels=["index", "kind"],
        )
        for name, status in index_statuses(runtime).items():
            for kind, key in (("probes", "probes"), ("batches", "probe_batches")):
                if isinstance(status.get(key), int):
                    probes.add_metric([name, kind], float(status[key]))
            for part, count in dict(status.get("rows_skipped") or {}).items():
                skipped.add_metric([str(part)], float(count))
            if isinstance(status.get("scope_indexes"), int):
                scopes.add_metric([name], float(status["scope_indexes"]))
            if isinstance(status.get("size"), int | float):
                size.add_metric([name], float(status["size"]))
            if isinstance(status.get("bytes"), int | float):
                held.add_metric([name], float(status["bytes"]))
            if isinstance(status.get("lag_seconds"), int | float):
                lag.add_metric([name], float(status["lag_seconds"]))
            if isinstance(status.get("backlog"), int):
                backlog.add_metric([name], float(status["backlog"]))
        yield size
        yield lag
        yield held
        yield scopes
        yield backlog
        yield skipped
        yield probes


def _replica_metrics(runtime: Any) -> Iterator[Any]:
    """Reads by the node that served them, and each standby's replay lag."""
    replicas = getattr(runtime.pool, "replicas", None)
    if replicas is None:
        return
    reads = CounterMetricFamily(
        "memory_db_reads", "Reads that tolerate staleness, by the node that served them",
        labels=["node"],
    )
    for node, count in sorted(replicas.served.items()):
        reads.add_metric([node], count)
    yield reads
    lag = GaugeMetricFamily(
        "memory_db_replica_lag_seconds", "How far a standby replays behind the primary",
        labels=["node"],
    )
    for standby in replicas.standbys:
        lag.add_metric([standby.name], standby.lag_seconds)
    yield lag


def breakers(runtime: Any) -> list[Any]:
    replicas = getattr(runtime.pool, "replicas", None)
    standbys = replicas.breakers() if replicas is not None else []
    found = [getattr(runtime.pool, "breaker", None), runtime.embedder_breaker, *standbys]
    return [b for b in found if b is not None]
