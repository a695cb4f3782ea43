"""Database access: the embedded server, the connection pool, and error translation.

``resolve_database_url`` starts (or joins) the embedded PostgreSQL when no URL is
configured. ``open_pool`` builds a psycopg 3 ``AsyncConnectionPool`` whose
connections know the pgvector type. ``wrap_db_errors`` is the storage edge: every
psycopg error raised inside it leaves as a ``memory_service.errors`` exception.
``named_query`` reads a statement by name from a package's ``.sql`` file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memory_service.config import Settings
from memory_service.errors import Conflict, InvalidInput, MemoryServiceError, Unavailable
from memory_service.resilience import CircuitBreaker, GuardedPool

log = logging.getLogger(__name__)

_embedded_servers: dict[Path, Any] = {}


def embedded_pgdata(settings: Settings) -> Path:
    return settings.data_path / "pg"


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the URL of the embedded server under ``data_dir``.

    pgserver keeps one server per data directory and reference-counts the
    processes that use it, so two service processes on the same ``data_dir``
    share one database.
    """
    if settings.database_url:
        return settings.database_url
    pgdata = embedded_pgdata(settings)
    server = _embedded_servers.get(pgdata)
    if server is None:
        with warnings.catch_warnings():
            # pgserver looks up a runtime directory at import; platformdirs warns when
            # XDG_RUNTIME_DIR is unset and falls back to /tmp, which is what we want
            warnings.simplefilter("ignore")
            import pgserver  # imported lazily: only the embedded mode needs it

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare subprocess/OS errors
            raise Unavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
        _embedded_servers[pgdata] = server
    return str(server.get_uri())


def stop_embedded(settings: Settings) -> None:
    """Release this process's handle on the embedded server (it stops with the last)."""
    server = _embedded_servers.pop(embedded_pgdata(settings), None)
    if server is not None:
        server.cleanup()


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await register_vector_async(conn)
    # a pooled connection ends its configure step idle, not in a transaction
    await conn.set_autocommit(True)
    await conn.execute("SET application_name = 'memory-service'")
    await conn.set_autocommit(False)


def open_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    """A pool ready to ``await pool.open(wait=True)``; closed by the caller.

    Its ``connection()`` goes through a circuit breaker (``pool.breaker``), so an
    unreachable database fails requests fast with 503 instead of queueing them.
    """
    return GuardedPool(
        url,
        breaker=CircuitBreaker(
            "database",
            failure_threshold=settings.breaker_failure_threshold,
            reset_seconds=settings.breaker_reset_seconds,
        ),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        open=False,
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        kwargs={"options": f"-c statement_timeout={int(settings.db_statement_timeout_ms)}"},
        timeout=settings.db_pool_timeout_seconds,
        name="memory-service",
    )


def connect_sync(url: str) -> psycopg.Connection[Any]:
    """A plain synchronous connection (CLI, migrations, benchmarks)."""
    conn = psycopg.connect(url, autocommit=True)
    with contextlib.suppress(psycopg.ProgrammingError):
        register_vector(conn)
    return conn


@contextlib.contextmanager
def wrap_db_errors_sync() -> Iterator[None]:
    try:
        yield
    except MemoryServiceError:
        raise
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate_db_error(exc) from exc


@contextlib.asynccontextmanager
async def wrap_db_errors() -> AsyncIterator[None]:
    """Translate driver errors into domain errors; the storage edge of the service."""
    try:
        yield
    except MemoryServiceError:
        raise
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate_db_error(exc) from exc


def translate_db_error(exc: BaseException) -> MemoryServiceError:
    if isinstance(exc, PoolTimeout):
        return Unavailable("the database did not answer in time", retry_after=2)
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict("a row with the same unique key already exists")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return Conflict("the change refers to a row that does not exist")
    if isinstance(exc, pg_errors.QueryCanceled):
        return Unavailable("the database query timed out", retry_after=2)
    if isinstance(
        exc,
        pg_errors.DataException
        | pg_errors.CheckViolation
        | pg_errors.NotNullViolation
        | pg_errors.CharacterNotInRepertoire,
    ):
        # the message names the offending value class, never SQL text
        reason = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
        return InvalidInput(f"the database rejected a value: {reason or type(exc).__name__}")
    if isinstance(exc, psycopg.OperationalError | pg_errors.AdminShutdown):
        return Unavailable("the database is unavailable", retry_after=2)
    log.exception("unexpected database error", exc_info=exc)
    return Unavailable("the database reported an unexpected error", retry_after=2)


@functools.cache
def named_query(package: str, filename: str, name: str) -> sql.SQL:
    """Statement ``name`` of a ``.sql`` file of ``package``: the lines after ``-- name: <name>``
    up to the next such line, comment lines left out. Read once per statement."""
    text = resources.files(package).joinpath(filename).read_text("utf-8")
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            current = blocks.setdefault(line.removeprefix("-- name: ").strip(), [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return sql.SQL("\n".join(blocks[name]).strip())
