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
from memory_service.config import Settings
from memory_service.embeddings import CachedEmbedder, Embedder, embedder_from_settings
from memory_service.events.install import install as operations_install
from memory_service.memories.service import MemoryService
from memory_service.pagination import CursorCodec
from memory_service.retrieval import pipeline as retrieval_pipeline
from memory_service.search import accelerator as hot_search
from memory_service.tenants import TenantService

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
    # extra components register a closer here; run in reverse order on close
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def start(cls, settings: Settings, *, embedder: Embedder | None = None) -> Runtime:
        url = await anyio.to_thread.run_sync(db.resolve_database_url, settings)
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(embedder_from_settings, settings)
        if settings.auto_migrate:
            await anyio.to_thread.run_sync(run_migrations, url, embedder.dimension)
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
            runtime = cls(
                settings=settings,
                database_url=url,
                pool=pool,
                embedder=cached,
                tenants=TenantService(pool, auth_cache_seconds=settings.auth_cache_seconds),
                memories=MemoryService(pool, cached, settings, cursors),
                cursors=cursors,
            )
            for install in extensions():
                await install(runtime)
        except BaseException:
            await pool.close()
            raise
        return runtime

    async def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while closing a component")
        self.closers.clear()
        await self.pool.close()

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


def run_migrations(url: str, dimension: int) -> list[int]:
    with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
        return migrate.apply_migrations(conn, dimension)
