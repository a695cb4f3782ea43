"""Typed settings, read once from ``MEMORY_*`` environment variables.

This is the only module that reads ``os.environ``. Everything else receives a
``Settings`` instance from its caller (the CLI, the app factory or a test).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs

PREFIX = "MEMORY_"

TraceExporter = Literal["none", "console", "otlp", "off"]
HttpLoop = Literal["auto", "asyncio", "uvloop"]
HttpParser = Literal["auto", "h11", "httptools"]
EmbeddingBackend = Literal["onnx", "torch"]
PgvectorIndexMode = Literal["deferred", "inline"]


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _default_data_dir() -> str:
    return str(Path(platformdirs.user_data_dir("memory-service")))


def _cpu_cores() -> int:
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the service. Field ``foo_bar`` is read from ``MEMORY_FOO_BAR``."""

    # where the data lives
    database_url: str | None = None  # unset: the embedded PostgreSQL under data_dir
    data_dir: str = field(default_factory=_default_data_dir)
    db_pool_min: int = 2
    db_pool_max: int = 16
    db_statement_timeout_ms: int = 30_000

    # read replicas: streaming standbys that serve reads which tolerate staleness
    database_replica_urls: str | None = None  # comma-separated standby URLs; unset: the primary serves every read
    replica_max_lag_s: float = 10.0  # a standby replaying further behind the primary gets no reads
    replica_wait_ms: float = 500.0  # a read with a consistency token waits this long for a standby, then reads the primary
    replica_check_interval_s: float = 1.0  # how often each standby's reachability and lag are probed

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None  # unset: admin endpoints refuse every request
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: str = "INFO"
    http_loop: HttpLoop = "auto"  # uvicorn's event loop: auto (uvloop when installed), asyncio
    http_parser: HttpParser = "auto"  # uvicorn's HTTP parser: auto (httptools), h11
    public_url: str | None = None  # behind a proxy: the origin browsers use (https://host:port); console forms must come from it
    replica_id: str | None = None  # set: every response says X-Served-By: <it> (which replica answered)

    # embeddings
    embedding_model: str | None = None  # unset: the packaged all-MiniLM-L6-v2
    embedding_batch_size: int = 64
    embedding_device: str = "cpu"
    # onnx: ONNX Runtime over a one-time offline export (torch serves models it cannot
    # export); torch: sentence-transformers as is. onnx is the default because it
    # retrieves exactly as torch does (make eval) at a fraction of the query latency.
    embedding_backend: EmbeddingBackend = "onnx"  # onnx or torch
    # int8: a single query in about two thirds of the float model's time, short-text
    # batches twice as fast, and the same retrieval (make eval: SciFact nDCG@10 and
    # LoCoMo R@10 equal or higher, also over documents the float model embedded)
    embedding_quantize: bool = True  # int8 weights (per channel) in the ONNX export; false: float
    embedding_export_dir: str | None = None  # unset: <data_dir>/onnx
    embedding_threads: int = 2  # intra-op threads for batches (ingest)
    embedding_query_threads: int = 2  # ONNX intra-op threads for one query's embedding
    query_cache_size: int = 2048

    # memories
    max_content_bytes: int = 32 * 1024
    max_batch_items: int = 1000
    max_metadata_bytes: int = 64 * 1024
    auth_cache_seconds: float = 5.0

    # pgvector HNSW
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    pgvector_ef_search: int = 100
    # below this many matching rows a search ranks them all (exact and cheap)
    exact_search_threshold: int = 2000
    # deferred: batch rows reach the graph through a background worker, searches rank
    # the waiting ones exactly; inline: every write updates the graph (slow: ~200 rows/s)
    pgvector_index_mode: PgvectorIndexMode = "deferred"  # deferred or inline
    pgvector_index_batch: int = 100  # rows the index worker adds per transaction (about 0.4 s of a core)
    pgvector_index_interval_s: float = 1.0  # how often an idle index worker looks for work
    pgvector_index_backlog_max: int = 50_000  # a load waits until this many rows outside FAISS do
    pgvector_index_quiet_s: float = 3.0  # a load has stopped when no row arrived for this long

    # in-process FAISS accelerator (a cache of PostgreSQL; see memory_service/search)
    faiss_enabled: bool = True
    faiss_memory_budget_mb: int = 3072  # tenants beyond it are served by pgvector
    faiss_preload: bool = True  # hold the largest tenants at start; off behind a tenant-affine proxy
    faiss_hnsw_m: int = 32
    faiss_ef_construction: int = 80
    faiss_ef_search: int = 64  # `memory-service tune` finds the smallest that meets a recall
    faiss_filtered_ef_search: int = 160  # for filtered probes, which need a deeper walk
    faiss_flat_max: int = 5_000  # a tenant up to this size gets an exact flat index (tune --flat-max)
    faiss_exact_max: int = 20_000  # candidate sets up to this size are scored exactly
    faiss_post_filter_max: int = 2000  # deepest FAISS probe before a filter goes exact
    faiss_scope_index_min_rows: int = 2000  # a searched scope this big gets its own graph; 0: off
    faiss_inline_load_max: int = 5000  # smaller tenants load inside the first request
    faiss_poll_interval_s: float = 0.5  # safety net behind LISTEN/NOTIFY
    faiss_snapshot_interval_s: float = 30.0
    change_log_retention_hours: float = 168.0

    # background index work (FAISS and scope graphs, pgvector's catch-up) yields to requests
    background_nice: int = 10  # its threads' and database session's priority (0..19; 0: as requests)
    background_pause_ms: float = 50.0  # longest a chunk of it waits for no request in flight
    faiss_background_threads: int = 1  # OpenMP threads of a background FAISS build

    # retrieval: keyword (BM25 over PostgreSQL full-text search), hybrid, scoring, dedupe
    keyword_text_search_config: str = "english"  # any PostgreSQL text-search configuration
    keyword_simple_weight: float = 0.5  # weight of the language-neutral 'simple' field
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    keyword_stats_rows: int = 100_000  # rows read at most for corpus statistics
    # a search that names no mode: the best ranking across SciFact and LoCoMo by `make eval`
    search_default_mode: str = "hybrid"
    hybrid_rrf_k: int = 60
    hybrid_vector_weight: float = 1.0
    hybrid_keyword_weight: float = 1.5  # hybrid: the keyword side counts 1.5x the vector side
    hybrid_candidates: int = 100  # ranked from each side before fusion
    rerank_candidates: int = 100  # pool re-ranked by recency, importance or diversity
    cross_encoder_path: str | None = None  # a model folder from `make train-cross-encoder`; unset: "rerank": "cross" answers 422
    cross_encoder_candidates: int = 20  # the first hits "rerank": "cross" re-scores (its cost grows with them)
    recency_half_life_hours: float = 720.0
    dedupe_threshold: float = 0.95  # cosine similarity when a tenant sets no default

    # events, streams, metrics and health
    event_retention_seconds: float = 7 * 24 * 3600.0
    event_retention_interval_seconds: float = 300.0
    event_retention_batch: int = 5000
    # the service's own events wait this long to be written together: one transaction
    # per search would compete with the searches themselves
    event_writer_linger_ms: float = 20.0
    event_outbox_poll_interval_s: float = 1.0  # how often the outbox mover looks for events other processes staged
    record_search_events: bool = False  # a memory.searched event (debug) for every search: off, as it costs 10-15% of search throughput
    sse_heartbeat_seconds: float = 15.0
    health_latency_target_ms: float = 500.0  # p95 above this costs health score
    health_window_seconds: float = 300.0
    index_stale_seconds: float = 60.0
    # the change feed: a cursor older than this answers 410 (take a snapshot)
    change_feed_retention_seconds: float = 7 * 24 * 3600.0
    change_feed_prune_interval_seconds: float = 300.0  # an index lagging longer costs health score

    # supervised background loops: restarted with back-off; one that keeps failing fails /ready
    background_restart_initial_s: float = 0.5  # first restart delay after a failure
    background_restart_max_s: float = 30.0  # the restart delay doubles up to this
    background_failure_threshold: int = 5  # failures within the window that make /ready 503
    background_failure_window_s: float = 300.0  # also how long a failure costs health score

    # executions: a full state every N steps, RFC 6902 patches between them
    execution_keyframe_interval: int = 50
    execution_max_state_bytes: int = 1024 * 1024
    execution_state_cache_mb: int = 64  # rebuilt states kept in process

    # resilience: circuit breakers around the database and the embedder
    db_pool_timeout_seconds: float = 10.0
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 5.0
    read_retry_attempts: int = 2  # extra tries of an idempotent read after a 503

    # fair sharing between tenants (per process; 0 switches a limit off)
    tenant_requests_per_second: float = 500.0
    tenant_request_burst: int = 1000
    tenant_max_in_flight: int = 8  # requests at once over all routes (streams and long polls apart)
    tenant_max_searches: int = field(default_factory=_cpu_cores)  # searches at once; more wait their turn
    tenant_search_burst: int = 0  # searches at once of a tenant alone; 0: no more than the width
    tenant_queue_wait_ms: float = 250.0  # a request over its share waits this long for a place, then 429
    tenant_max_streams: int = 16  # concurrent event streams
    tenant_max_long_polls: int = 16  # concurrent requests that wait for a change (claims with wait_s)
    tenant_max_request_bytes: int = 32 * 1024 * 1024
    # requests without a valid API key (none, malformed, unknown, revoked), per client address
    anonymous_requests_per_second: float = 20.0
    anonymous_request_burst: int = 40
    anonymous_max_in_flight: int = 4

    # workflows
    workflow_max_json_bytes: int = 256 * 1024  # a run's input, a step's output, a signal
    workflow_poll_interval_s: float = 1.0  # safety net behind LISTEN/NOTIFY and timers
    workflow_driver_concurrency: int = 4  # built-in steps one process runs at once
    workflow_driver_enabled: bool = True

    # telemetry
    # none: spans recorded, nothing exported (trace ids in problem documents and events);
    # console or otlp: exported; off: no request or database spans at all
    trace_exporter: TraceExporter = "none"
    otlp_endpoint: str | None = None
    service_name: str = "memory-service"

    # environment secrets at rest: comma-separated Fernet keys, the first encrypts;
    # unset with the embedded database: a key generated into <data_dir>/secrets.key
    secrets_key: str | None = None

    # migrations
    auto_migrate: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``MEMORY_*`` variables, then apply ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        if self.trace_exporter not in ("none", "console", "otlp", "off"):
            raise SettingsError(
                "MEMORY_TRACE_EXPORTER must be none, console, otlp or off, "
                f"not {self.trace_exporter!r}"
            )
        if self.http_loop not in ("auto", "asyncio", "uvloop"):
            raise SettingsError(
                f"MEMORY_HTTP_LOOP must be auto, asyncio or uvloop, not {self.http_loop!r}"
            )
        if self.http_parser not in ("auto", "h11", "httptools"):
            raise SettingsError(
                f"MEMORY_HTTP_PARSER must be auto, h11 or httptools, not {self.http_parser!r}"
            )
        if self.embedding_backend not in ("onnx", "torch"):
            raise SettingsError(
                f"MEMORY_EMBEDDING_BACKEND must be onnx or torch, not {self.embedding_backend!r}"
            )
        if self.pgvector_index_mode not in ("deferred", "inline"):
            raise SettingsError(
                f"MEMORY_PGVECTOR_INDEX_MODE must be deferred or inline, not {self.pgvector_index_mode!r}"
            )
        if (
            self.pgvector_index_batch < 1
            or self.pgvector_index_interval_s <= 0
            or self.pgvector_index_backlog_max < 0
            or self.pgvector_index_quiet_s < 0
        ):
            raise SettingsError("the pgvector index batch and interval must be positive")
        if not 0 <= self.background_nice <= 19 or self.background_pause_ms < 0:
            raise SettingsError(
                "MEMORY_BACKGROUND_NICE must be in 0..19 and MEMORY_BACKGROUND_PAUSE_MS at least 0"
            )
        if self.faiss_background_threads < 1:
            raise SettingsError("MEMORY_FAISS_BACKGROUND_THREADS must be at least 1")
        if self.embedding_query_threads < 1:
            raise SettingsError("MEMORY_EMBEDDING_QUERY_THREADS must be at least 1")
        if self.event_outbox_poll_interval_s <= 0:
            raise SettingsError("MEMORY_EVENT_OUTBOX_POLL_INTERVAL_S must be above 0")
        if self.embedding_threads < 1:
            raise SettingsError("MEMORY_EMBEDDING_THREADS must be at least 1")
        if self.public_url is not None and public_origin(self.public_url) is None:
            raise SettingsError(
                "MEMORY_PUBLIC_URL must be an origin such as https://memory.example.com "
                f"(scheme, host and optional port, no path), not {self.public_url!r}"
            )
        if not 1 <= self.port <= 65535:
            raise SettingsError("MEMORY_PORT must be between 1 and 65535")
        if (
            self.background_restart_initial_s <= 0
            or self.background_restart_max_s < self.background_restart_initial_s
            or self.background_failure_threshold < 1
            or self.background_failure_window_s <= 0
        ):
            raise SettingsError(
                "MEMORY_BACKGROUND_* must be positive, the restart cap at least the initial delay"
            )
        if self.max_batch_items < 1 or self.max_content_bytes < 1:
            raise SettingsError("limits must be positive")
        if self.execution_keyframe_interval < 1 or self.execution_max_state_bytes < 1:
            raise SettingsError("the execution keyframe interval and state limit must be positive")
        if self.db_pool_min < 1 or self.db_pool_max < self.db_pool_min:
            raise SettingsError("MEMORY_DB_POOL_MAX must be >= MEMORY_DB_POOL_MIN >= 1")
        if self.replica_max_lag_s <= 0 or self.replica_wait_ms < 0 or self.replica_check_interval_s <= 0:
            raise SettingsError(
                "MEMORY_REPLICA_MAX_LAG_S and MEMORY_REPLICA_CHECK_INTERVAL_S must be positive, "
                "MEMORY_REPLICA_WAIT_MS at least 0"
            )
        if not 0.0 < self.dedupe_threshold <= 1.0:
            raise SettingsError("MEMORY_DEDUPE_THRESHOLD must be in (0, 1]")
        if self.tenant_requests_per_second < 0 or self.tenant_request_burst < 1:
            raise SettingsError("MEMORY_TENANT_REQUESTS_PER_SECOND >= 0, MEMORY_TENANT_REQUEST_BURST >= 1")
        if self.search_default_mode not in ("vector", "keyword", "hybrid"):
            raise SettingsError("MEMORY_SEARCH_DEFAULT_MODE must be one of vector, keyword, hybrid")
        if self.anonymous_requests_per_second < 0 or self.anonymous_request_burst < 1:
            raise SettingsError("MEMORY_ANONYMOUS_REQUESTS_PER_SECOND >= 0, MEMORY_ANONYMOUS_REQUEST_BURST >= 1")
        if min(self.tenant_max_in_flight, self.anonymous_max_in_flight, self.tenant_queue_wait_ms,
               self.tenant_max_searches, self.tenant_search_burst) < 0:
            raise SettingsError("in-flight shares and MEMORY_TENANT_QUEUE_WAIT_MS must be >= 0 (0: off)")
        if min(self.hybrid_rrf_k, self.hybrid_candidates, self.rerank_candidates,
               self.cross_encoder_candidates) < 1:
            raise SettingsError("MEMORY_HYBRID_RRF_K and the candidate counts must be positive")
        if self.recency_half_life_hours <= 0 or self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise SettingsError("recency half-life must be > 0, bm25 k1 >= 0, bm25 b in [0, 1]")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def embedding_export_path(self) -> Path:
        """Where ONNX exports of embedding models live (made once, reused by later starts)."""
        if self.embedding_export_dir:
            return Path(self.embedding_export_dir).expanduser()
        return self.data_path / "onnx"


def public_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL without a path, query or credentials."""
    parts = urlsplit(url.strip().rstrip("/"))
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        return None
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def settings_reference() -> str:
    """Markdown tables of every setting, built from this class's source and comments.

    A comment after a blank line opens a group; a comment at the end of a field's
    line is that field's meaning.
    """
    import inspect
    import re

    field_line = re.compile(r"^    (\w+): ([^=]+?)(?: = (.+?))?(?:\s+#\s*(.*))?$")
    names = {f.name for f in fields(Settings)}
    out: list[str] = []
    previous = ""
    for line in inspect.getsource(Settings).splitlines():
        if line.startswith("    # ") and not previous.strip():
            title = line.strip().lstrip("# ")
            out += ["", f"### {title[:1].upper()}{title[1:]}", ""]
            out += ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        previous = line
        match = field_line.match(line)
        if not match or match[1] not in names:
            continue
        default = (match[3] or "").replace(
            "field(default_factory=_default_data_dir)", "the per-user data directory"
        ).replace("field(default_factory=_cpu_cores)", "the CPU cores, at least 2")
        cells = [f"`{PREFIX}{match[1].upper()}`", f"`{match[2].strip()}`", f"`{default}`"]
        cells = [c.replace("|", "\\|") for c in cells] + [(match[4] or "").replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out).strip() + "\n"


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("bool"):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}: cannot read {raw!r} as {kind}") from exc
    return raw
