"""Wiring of the core: the resources a running service holds, built in one place.

``Runtime.start`` resolves the database (starting the embedded server when no
URL is configured), loads the embedding model, applies migrations, opens the
pool and builds the domain services. The HTTP app, the CLI and the benchmarks
all start the core through it, and ``close`` releases everything in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from psycopg_pool import AsyncConnectionPool

from memory_service import db, migrate
from memory_service.changes import ChangeFeed
from memory_service.config import Settings, SettingsError
from memory_service.embeddings import CachedEmbedder, Embedder, embedder_from_settings
from memory_service.environments import reseal_secrets, secrets_exist
from memory_service.events.install import install as operations_install
from memory_service.events.writer import EventWriter
from memory_service.executions import ExecutionLimits, ExecutionService
from memory_service.fairness import TenantLimiter
from memory_service.memories.as_of import MemoriesAsOf
from memory_service.memories.keyed import KeyedMemories
from memory_service.memories.service import MemoryService
from memory_service.pagination import CursorCodec
from memory_service.retrieval import pipeline as retrieval_pipeline
from memory_service.search import accelerator as hot_search
from memory_service.secret_box import SecretBox, load_secret_box
from memory_service.tenants import TenantService
from memory_service.transfer.migration import MigrationService
from memory_service.transfer.service import TransferService
from memory_service.workflows import Workflows

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    pool: AsyncConnectionPool
    embedder: CachedEmbedder
    tenants: TenantService
    memories: MemoryService
    cursors: CursorCodec
    limiter: TenantLimiter
    secret_box: SecretBox | None
    keyed_memories: KeyedMemories
    memories_as_of: MemoriesAsOf
    changes: ChangeFeed
    # built once the event log's writer exists (after the extensions below)
    executions: ExecutionService = field(init=False)
    workflows: Workflows = field(init=False)  # needs the executions
    # extra components register a closer here; run in reverse order on close
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    migrations: MigrationService | None = None
    transfers: TransferService | None = None

    @classmethod
    async def start(cls, settings: Settings, *, embedder: Embedder | None = None) -> Runtime:
        url = await anyio.to_thread.run_sync(db.resolve_database_url, settings)
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(embedder_from_settings, settings)
        if settings.auto_migrate:
            await anyio.to_thread.run_sync(run_migrations, url, embedder.dimension)
        secret_box = await anyio.to_thread.run_sync(check_secrets_at_rest, url, settings)
        pool = db.open_pool(url, settings)
        await pool.open(wait=True)
        try:
            async with db.wrap_db_errors(), pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT value FROM service_state WHERE name = 'cursor_key'"
                )
                row = await cur.fetchone()
            if row is None:
                raise RuntimeError("the database has no cursor key: run `memory-service migrate`")
            cursors = CursorCodec(str(row[0]).encode())
            cached = CachedEmbedder(embedder, settings.query_cache_size)
            memories = MemoryService(pool, cached, settings, cursors)
            changes = ChangeFeed(
                pool,
                cursors,
                url,
                retention_seconds=settings.change_feed_retention_seconds,
                prune_interval_seconds=settings.change_feed_prune_interval_seconds,
                heartbeat_seconds=settings.sse_heartbeat_seconds,
            )
            runtime = cls(
                settings=settings,
                database_url=url,
                pool=pool,
                embedder=cached,
                tenants=TenantService(pool, auth_cache_seconds=settings.auth_cache_seconds),
                memories=memories,
                cursors=cursors,
                secret_box=secret_box,
                limiter=TenantLimiter(
                    rate=settings.tenant_requests_per_second,
                    burst=settings.tenant_request_burst,
                    slots={
                        "stream": settings.tenant_max_streams,
                        "long_poll": settings.tenant_max_long_polls,
                    },
                ),
                keyed_memories=KeyedMemories(memories),
                memories_as_of=MemoriesAsOf(pool, cached, memories.validate, cursors),
                changes=changes,
            )
            await changes.start()
            runtime.closers.append(changes.close)
            for install in extensions():
                await install(runtime)
            runtime.executions = build_executions(runtime)
            runtime.workflows = Workflows.build(
                settings, url, pool, cursors, runtime.memories, runtime.executions
            )
            await runtime.workflows.start()
            runtime.closers.append(runtime.workflows.close)
            await runtime._start_transfers()
        except BaseException:
            await pool.close()
            if not settings.database_url:
                db.stop_embedded(settings)
            raise
        return runtime

    async def _start_transfers(self) -> None:
        """Browser migrations and export/import; they report to the event writer."""
        writer = self.extras["event_writer"]
        self.migrations = MigrationService(
            self.pool, self.embedder, self.memories.validate, writer
        )
        self.transfers = TransferService(
            self.pool, self.embedder, self.memories.validate, writer, self.settings,
            self.secret_box,
        )
        await self.migrations.recover()
        # closers run in reverse: running migrations stop before the event writer
        self.closers.append(self.migrations.close)

    async def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while closing a component")
        self.closers.clear()
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
                pending = await conn.execute("SELECT count(*) FROM schema_migrations")
                row = await pending.fetchone()
            applied = int(row[0]) if row else 0
            expected = len(migrate.available_migrations())
            checks["database"] = "ok"
            checks["migrations"] = (
                "ok" if applied >= expected else f"{expected - applied} migrations pending"
            )
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        return checks


Extension = Callable[["Runtime"], Awaitable[None]]


def extensions() -> list[Extension]:
    """Features that attach to a started runtime, in start-up order.

    Each ``install(runtime)`` may add services to ``runtime.extras``, change
    listeners or search backends to ``runtime.memories``, and closers to
    ``runtime.closers``.
    """
    installs: list[Extension] = []
    installs.append(retrieval_pipeline.install)
    installs.append(operations_install)
    installs.append(hot_search.install)
    return installs


def build_executions(runtime: Runtime) -> ExecutionService:
    settings = runtime.settings
    writer = runtime.extras.get("event_writer")
    return ExecutionService(
        runtime.pool,
        runtime.cursors,
        ExecutionLimits(
            keyframe_interval=settings.execution_keyframe_interval,
            max_state_bytes=settings.execution_max_state_bytes,
            max_batch=settings.max_batch_items,
            cache_bytes=settings.execution_state_cache_mb * 1024 * 1024,
        ),
        events=writer if isinstance(writer, EventWriter) else None,
    )


def run_migrations(url: str, dimension: int) -> list[int]:
    with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
        return migrate.apply_migrations(conn, dimension)


def check_secrets_at_rest(url: str, settings: Settings) -> SecretBox | None:
    """The secret box; plain-text secrets left from before are sealed with it.

    Without a key (an external database and no ``MEMORY_SECRETS_KEY``) the service
    refuses to start once any secret is stored: it could neither protect new ones
    nor tell a reader why old ones stopped working.
    """
    box = load_secret_box(settings)
    with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
        if box is not None:
            sealed = reseal_secrets(conn, box, everything=False)
            if sealed:
                log.info("sealed the plain-text secrets of %d environment(s)", sealed)
        elif secrets_exist(conn):
            raise SettingsError(
                "environment secrets are stored but MEMORY_SECRETS_KEY is not set; set it to "
                "the key they were encrypted with (see docs/operations.md)"
            )
    return box
