"""Wiring of the core: every service a running process holds, built in one place.

``Runtime.start`` resolves the database (starting the embedded server when no
URL is configured), loads the embedding model, applies migrations, opens the
pool and then builds each service with what it needs passed to its
constructor: listeners, backends and the tracer included. Every service is a
typed field of ``Runtime``; nothing is attached to a finished object. Every
background loop a service starts runs under the one ``Supervisor`` built here
first (see ``memory_service.infra.supervisor``). The HTTP app, the CLI and the
benchmarks all start the core through it, and ``close`` stops the background
workers in reverse order, closes the pool and gives back this process's hold on
the embedded PostgreSQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio.to_thread
from opentelemetry import trace
from psycopg_pool import AsyncConnectionPool

from memory_service.changes import ChangeFeed
from memory_service.changes import store as change_feed_store
from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder, Embedder, embedder_from_settings
from memory_service.events.fanout import EventFanout
from memory_service.events.outbox import OutboxMover
from memory_service.events.recorder import OperationRecorder
from memory_service.events.retention import RetentionWorker
from memory_service.events.service import EventService
from memory_service.events.startup import start_event_log
from memory_service.events.writer import EventWriter
from memory_service.executions import ExecutionLimits, ExecutionService
from memory_service.infra import db, migrate, service_state
from memory_service.infra.fairness import Share, TenantLimiter
from memory_service.infra.foreground import Foreground
from memory_service.infra.metrics import IndexStatus, ServiceMetrics
from memory_service.infra.pagination import CursorCodec
from memory_service.infra.replicas import RoutedPool
from memory_service.infra.resilience import CircuitBreaker, GuardedEmbedder
from memory_service.infra.secret_box import SecretBox
from memory_service.infra.supervisor import Closer, SupervisionPolicy, Supervisor, close_all
from memory_service.memories.as_of import MemoriesAsOf
from memory_service.memories.importer import MemoryImporter
from memory_service.memories.keyed import KeyedMemories
from memory_service.memories.service import MemoryService
from memory_service.memories.validation import MemoryValidator
from memory_service.records.console_sessions import ConsoleSessionStore, sweep_console_sessions
from memory_service.records.environments import EnvironmentService, check_secrets_at_rest
from memory_service.records.tasks import TaskService
from memory_service.records.tenants import TenantService
from memory_service.retrieval.cross_encoder import load_cross_encoder
from memory_service.retrieval.dedupe import SemanticDedupe
from memory_service.retrieval.keyword import KeywordSearch
from memory_service.retrieval.settings import RetrievalSettingsService
from memory_service.search import store as change_log_store
from memory_service.search.accelerator import HotSearch
from memory_service.search.follower import ChangeFollower
from memory_service.search.index_worker import VectorIndexWorker
from memory_service.search.indexes import TenantIndexes
from memory_service.search.keyword import KeywordRanking
from memory_service.search.service import SearchService
from memory_service.search.vector import VectorSearch
from memory_service.transfer import jobs_store as migration_jobs_store
from memory_service.transfer.migration import MigrationService
from memory_service.transfer.service import TransferService
from memory_service.workflows import Workflows

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    pool: AsyncConnectionPool
    cursors: CursorCodec
    embedder: CachedEmbedder
    embedder_breaker: CircuitBreaker
    metrics: ServiceMetrics
    supervisor: Supervisor  # owns every background loop: logs, counts and restarts them
    foreground: Foreground  # the requests in flight, which background index work yields to
    tenants: TenantService
    event_writer: EventWriter
    event_fanout: EventFanout
    event_retention: RetentionWorker
    event_outbox: OutboxMover  # moves events that transitions staged into the log
    events: EventService
    tasks: TaskService
    environments: EnvironmentService
    retrieval_settings: RetrievalSettingsService
    hot_search: HotSearch | None  # None when FAISS is turned off
    vector_index_worker: VectorIndexWorker  # adds batch-written rows to pgvector's graph
    memories: MemoryService
    memory_importer: MemoryImporter
    search: SearchService
    keyed_memories: KeyedMemories
    memories_as_of: MemoriesAsOf
    secret_box: SecretBox | None
    limiter: TenantLimiter
    changes: ChangeFeed
    executions: ExecutionService
    workflows: Workflows
    migrations: MigrationService
    transfers: TransferService
    console_sessions: ConsoleSessionStore  # shared by every process of a fleet
    # name -> a reporter of an index's size and lag (metrics and the health score read it)
    index_status: dict[str, IndexStatus] = field(default_factory=dict)
    # background workers, closed in reverse order before the pool
    closers: list[Closer] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> Runtime:
        url = await anyio.to_thread.run_sync(db.resolve_database_url, settings)
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(embedder_from_settings, settings)
        if settings.auto_migrate:
            await anyio.to_thread.run_sync(migrate.run_migrations, url, embedder.dimension)
        box = await anyio.to_thread.run_sync(check_secrets_at_rest, url, settings)
        pool = db.open_pool(url, settings)
        await pool.open(wait=True)
        closers: list[Closer] = []
        try:
            return await _build(settings, url, pool, embedder, box, tracer_provider, closers)
        except BaseException:
            await close_all(closers)
            await pool.close()
            if not settings.database_url:
                db.stop_embedded(settings)
            raise

    async def close(self) -> None:
        await close_all(self.closers)
        await self.pool.close()
        if not self.settings.database_url:
            # the embedded server stops here when this was its last user: uvicorn
            # re-raises SIGTERM/SIGINT after shutdown, so atexit hooks never run
            await anyio.to_thread.run_sync(db.stop_embedded, self.settings)

    async def ready(self) -> dict[str, str]:
        """Readiness checks by name: 'ok' or what is wrong."""
        checks: dict[str, str] = {}
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
                applied = await migrate.applied_count(conn)
            expected = len(migrate.available_migrations())
            checks["database"] = "ok"
            checks["migrations"] = (
                "ok" if applied >= expected else f"{expected - applied} migrations pending"
            )
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["background"] = self.supervisor.readiness()
        return checks


async def _build(
    settings: Settings,
    url: str,
    pool: AsyncConnectionPool,
    model: Embedder,
    box: SecretBox | None,
    tracer_provider: trace.TracerProvider | None,
    closers: list[Closer],
) -> Runtime:
    cursors = CursorCodec(await service_state.cursor_key(pool))
    metrics = ServiceMetrics()
    supervisor = Supervisor(SupervisionPolicy.of(settings))
    closers.append(supervisor.close)  # runs last: stops whatever an owner left running
    if isinstance(pool, RoutedPool):
        closers.append(supervisor.spawn("replica-monitor", pool.replicas.watch).stop)
    breaker = CircuitBreaker(
        "embedder",
        failure_threshold=settings.breaker_failure_threshold,
        reset_seconds=settings.breaker_reset_seconds,
    )
    embeddings_tracer = trace.get_tracer(
        "memory_service.embedding.embeddings", tracer_provider=tracer_provider
    )
    guarded = GuardedEmbedder(
        model, breaker, tracer=lambda: embeddings_tracer, observe=metrics.observe_embedding
    )
    embedder = CachedEmbedder(guarded, settings.query_cache_size)
    closers.append(embedder.close)
    keyword = KeywordSearch(pool, settings)
    await keyword.check_config()
    writer, fanout, retention, outbox = await start_event_log(
        settings, url, pool, supervisor, closers
    )
    recorder = OperationRecorder(
        writer, tracer_provider=tracer_provider, record_searches=settings.record_search_events
    )

    foreground = Foreground(settings.background_pause_ms / 1000)
    hot = await _start_hot_search(
        settings, url, pool, model.dimension, supervisor, foreground, closers
    )
    validator = MemoryValidator(settings, model.dimension)
    memories = MemoryService(
        pool,
        embedder,
        settings,
        cursors,
        validator,
        dedupe=SemanticDedupe(settings),
        listeners=[*([hot.on_change] if hot else []), recorder.memories_changed],
        purge_steps=[
            change_feed_store.erase_memory_bodies,
            change_log_store.mark_purged,
            migration_jobs_store.erase_memory_rows,
        ],
        erasers=[hot.erase] if hot else [],
    )
    background_pool = db.open_background_pool(url, settings)
    await background_pool.open(wait=True)
    closers.append(background_pool.close)
    index_worker = VectorIndexWorker(
        background_pool,
        batch_size=settings.pgvector_index_batch,
        idle_interval_s=settings.pgvector_index_interval_s,
        backlog_max=settings.pgvector_index_backlog_max,
        quiet_s=settings.pgvector_index_quiet_s,
        held=hot.indexes.ready_tenants if hot is not None else frozenset,
        busy=lambda: memories.batches_in_flight > 0,
        foreground=foreground,
        supervisor=supervisor,
    )
    index_worker.start()
    closers.append(index_worker.close)
    search = SearchService(
        pool,
        settings,
        embedder,
        validator,
        VectorSearch(pool, settings, hot),
        KeywordRanking(keyword, hot),
        listeners=[recorder.searched],
        cross=await anyio.to_thread.run_sync(load_cross_encoder, settings),
    )
    changes = await _start_change_feed(settings, url, pool, cursors, supervisor, closers)
    executions = _executions(settings, pool, cursors, writer)
    workflows = Workflows.build(
        settings, url, pool, cursors, memories, search, executions, supervisor, outbox
    )
    await workflows.start()
    closers.append(workflows.close)
    migrations = MigrationService(pool, embedder, validator, writer)
    await migrations.recover()
    # closers run in reverse: running migrations stop before the event writer
    closers.append(migrations.close)
    console_sessions = ConsoleSessionStore(pool, box)
    sweeper = supervisor.spawn(
        "console-session-sweep", lambda: sweep_console_sessions(console_sessions)
    )
    closers.append(sweeper.stop)
    runtime = Runtime(
        settings=settings,
        database_url=url,
        pool=pool,
        cursors=cursors,
        embedder=embedder,
        embedder_breaker=breaker,
        metrics=metrics,
        supervisor=supervisor,
        foreground=foreground,
        tenants=TenantService(pool, auth_cache_seconds=settings.auth_cache_seconds),
        event_writer=writer,
        event_fanout=fanout,
        event_retention=retention,
        event_outbox=outbox,
        events=EventService(
            pool,
            cursors,
            fanout,
            max_batch=settings.max_batch_items,
            heartbeat_seconds=settings.sse_heartbeat_seconds,
        ),
        tasks=TaskService(pool, cursors, status_listeners=[recorder.task_status]),
        environments=EnvironmentService(pool, cursors, box),
        retrieval_settings=RetrievalSettingsService(pool, settings),
        hot_search=hot,
        vector_index_worker=index_worker,
        memories=memories,
        memory_importer=MemoryImporter(memories, batch_size=settings.max_batch_items),
        search=search,
        keyed_memories=KeyedMemories(memories),
        memories_as_of=MemoriesAsOf(pool, embedder, validator, cursors),
        secret_box=box,
        limiter=_limiter(settings),
        changes=changes,
        executions=executions,
        workflows=workflows,
        migrations=migrations,
        transfers=TransferService(pool, embedder, validator, writer, settings, box),
        console_sessions=console_sessions,
        index_status={
            "pgvector": index_worker.status,
            **({"faiss": hot.status} if hot else {}),
        },
        closers=closers,
    )
    metrics.attach(runtime)
    if hot is not None:
        hot.start()
    return runtime


async def _start_change_feed(
    settings: Settings,
    url: str,
    pool: AsyncConnectionPool,
    cursors: CursorCodec,
    supervisor: Supervisor,
    closers: list[Closer],
) -> ChangeFeed:
    changes = ChangeFeed(
        pool,
        cursors,
        url,
        retention_seconds=settings.change_feed_retention_seconds,
        prune_interval_seconds=settings.change_feed_prune_interval_seconds,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        supervisor=supervisor,
    )
    await changes.start()
    closers.append(changes.close)
    return changes


def _executions(
    settings: Settings, pool: AsyncConnectionPool, cursors: CursorCodec, writer: EventWriter
) -> ExecutionService:
    limits = ExecutionLimits(
        keyframe_interval=settings.execution_keyframe_interval,
        max_state_bytes=settings.execution_max_state_bytes,
        max_batch=settings.max_batch_items,
        cache_bytes=settings.execution_state_cache_mb * 1024 * 1024,
    )
    return ExecutionService(pool, cursors, limits, events=writer)


def _limiter(settings: Settings) -> TenantLimiter:
    return TenantLimiter(
        rate=settings.tenant_requests_per_second,
        burst=settings.tenant_request_burst,
        slots={"stream": settings.tenant_max_streams, "long_poll": settings.tenant_max_long_polls},
        in_flight=settings.tenant_max_in_flight,
        queue_wait_s=settings.tenant_queue_wait_ms / 1000,
        anonymous=Share(
            settings.anonymous_requests_per_second,
            settings.anonymous_request_burst,
            settings.anonymous_max_in_flight,
        ),
    )


async def _start_hot_search(
    settings: Settings,
    url: str,
    pool: AsyncConnectionPool,
    dimension: int,
    supervisor: Supervisor,
    foreground: Foreground,
    closers: list[Closer],
) -> HotSearch | None:
    if not settings.faiss_enabled:
        return None
    indexes = TenantIndexes(pool, settings, dimension, supervisor, foreground)
    follower = ChangeFollower(
        pool, url, indexes, poll_interval_s=settings.faiss_poll_interval_s, supervisor=supervisor
    )
    await follower.start()
    hot = HotSearch(pool, settings, indexes, follower)
    closers.append(hot.close)
    return hot
