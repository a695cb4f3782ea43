"""Database access: the embedded server, the connection pool, and error translation.

``resolve_database_url`` starts (or joins) the embedded PostgreSQL when no URL is
configured. ``open_pool`` builds a psycopg 3 ``AsyncConnectionPool`` whose
connections know the pgvector type and read JSON numbers back as they were written
(``load_json``). ``wrap_db_errors`` is the storage edge: every
psycopg error raised inside it leaves as a ``memory_service.errors`` exception.
``named_query`` reads a statement by name from a package's ``.sql`` file.
``open_background_pool`` holds the one low-priority session of background work.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import time
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
from memory_service.infra.foreground import is_postgres, lower_priority
from memory_service.infra.pg_values import configure_values
from memory_service.infra.pool_checks import CheckWhenIdle
from memory_service.infra.replicas import ReplicaSet, RoutedPool, Standby, split_urls
from memory_service.infra.resilience import CircuitBreaker, GuardedPool
from memory_service.infra.stages import TimedCursor

log = logging.getLogger(__name__)

_embedded_servers: dict[Path, Any] = {}
_embedded_users: dict[Path, int] = {}


def embedded_pgdata(settings: Settings) -> Path:
    return settings.data_path / "pg"


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the URL of the embedded server under ``data_dir``.

    pgserver keeps one server per data directory and reference-counts the
    processes that use it (``pg/.handle_pids.json``), so two service processes on
    the same ``data_dir`` share one database and the last one to leave stops it.
    Within a process each call takes one reference that ``stop_embedded`` gives
    back; whatever is still held at exit is released by pgserver's atexit hook.
    Processes that died without releasing (``kill -9``) are dropped from the list
    first, so a server they left running is adopted and stopped in turn.
    """
    if settings.database_url:
        return settings.database_url
    pgdata = embedded_pgdata(settings)
    server = _embedded_servers.get(pgdata)
    if server is None:
        pgserver = _import_pgserver()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(pgdata)
        created = not (pgdata / "PG_VERSION").exists()
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare subprocess/OS errors
            raise Unavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
        _embedded_servers[pgdata] = server
        log.info("%s the embedded PostgreSQL in %s", "created" if created else "using", pgdata)
    _embedded_users[pgdata] = _embedded_users.get(pgdata, 0) + 1
    return str(server.get_uri())


def stop_embedded(settings: Settings) -> None:
    """Give back one reference; the last in this process releases its handle, and
    the server stops when that was the last handle of any process."""
    pgdata = embedded_pgdata(settings)
    if settings.database_url or pgdata not in _embedded_users:
        return  # this process holds no reference to give back
    users = _embedded_users[pgdata] - 1
    if users > 0:
        _embedded_users[pgdata] = users
        return
    _embedded_users.pop(pgdata, None)
    server = _embedded_servers.pop(pgdata, None)
    if server is not None:
        forget_dead_handles(pgdata)  # a sibling killed with -9 must not keep it running
        server.cleanup()


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # pgserver looks up a runtime directory at import; platformdirs warns when
        # XDG_RUNTIME_DIR is unset and falls back to /tmp, which is what we want
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only the embedded mode needs it
    # pgserver logs every initdb/pg_ctl line at INFO: 60 lines on a first start
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet still answers signal 0."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop processes that no longer exist from pgserver's list of users; the live rest."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return []
    try:
        pids = [int(p) for p in json.loads(handles.read_text())]
    except (ValueError, TypeError):
        pids = []
    live = [pid for pid in pids if _alive(pid)]
    if live != pids:
        log.info("embedded PostgreSQL: forgetting exited processes %s", sorted(set(pids) - set(live)))
        handles.write_text(json.dumps(live))
    return live


def stop_data_dir(settings: Settings, *, wait_seconds: float = 30.0) -> str:
    """Stop the service processes on ``data_dir`` and its embedded PostgreSQL."""
    pgdata = embedded_pgdata(settings)
    users = [pid for pid in forget_dead_handles(pgdata) if pid != os.getpid()]
    for pid in users:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    while any(_alive(pid) for pid in users) and time.monotonic() < deadline:
        time.sleep(0.2)
    _import_pgserver()
    from pgserver.utils import PostmasterInfo

    stopped = ""
    if users:
        still = [pid for pid in users if _alive(pid)]
        gone = [pid for pid in users if pid not in still]
        parts = [f"stopped service process{'es' if len(gone) > 1 else ''} {_pids(gone)}"] if gone else []
        if still:
            parts.append(f"still running after {wait_seconds:.0f} s: {_pids(still)}")
        stopped = "; ".join(parts)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        forget_dead_handles(pgdata)
        if stopped:
            # the last service process on a data directory stops its PostgreSQL itself
            return f"{stopped}; PostgreSQL in {pgdata} stopped with them"
        return f"nothing to stop: no service and no PostgreSQL is running in {pgdata}"
    # SIGINT is PostgreSQL's "fast" shutdown; unlike pg_ctl it also works for root,
    # whose servers pgserver runs as another user
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGINT)
    deadline = time.monotonic() + wait_seconds
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    (pgdata / ".handle_pids.json").write_text("[]")
    prefix = f"{stopped}; " if stopped else ""
    return f"{prefix}stopped PostgreSQL (pid {info.pid}) in {pgdata}"


def _pids(pids: list[int]) -> str:
    return "(pid " + ", ".join(str(pid) for pid in pids) + ")"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await register_vector_async(conn)
    configure_values(conn)
    # a pooled connection ends its configure step idle, not in a transaction
    await conn.set_autocommit(True)
    await conn.execute("SET application_name = 'memory-service'")
    await conn.set_autocommit(False)


def open_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    """A pool ready to ``await pool.open(wait=True)``; closed by the caller.

    Its ``connection()`` goes through a circuit breaker (``pool.breaker``), so an
    unreachable database fails requests fast with 503 instead of queueing them.
    With standbys configured it is a ``RoutedPool`` that also holds (and opens and
    closes) one pool per standby; without, the plain ``GuardedPool``.
    """
    standby_urls = split_urls(settings.database_replica_urls)
    kind = RoutedPool if standby_urls else GuardedPool
    # a connection idle over a second is checked before it is lent; a fresh one is not
    checks = CheckWhenIdle()
    pool = kind(
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
        check=checks.check,
        reset=checks.reset,
        kwargs={
            "options": f"-c statement_timeout={int(settings.db_statement_timeout_ms)}",
            "cursor_factory": TimedCursor,  # statements count as a request's database time
        },
        timeout=settings.db_pool_timeout_seconds,
        name="memory-service",
    )
    if isinstance(pool, RoutedPool):
        pool.replicas = ReplicaSet(
            [_standby(n, u, settings) for n, u in enumerate(standby_urls, start=1)],
            max_lag_seconds=settings.replica_max_lag_s,
            wait_seconds=settings.replica_wait_ms / 1000,
            check_interval_seconds=settings.replica_check_interval_s,
        )
    return pool


def open_background_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    """One connection for background work in the database (pgvector's catch-up). When
    its server process runs on this machine (the embedded server, or a local one
    reached through a socket or the loopback address), it runs at ``background_nice``:
    the server's cores go to the sessions of requests first. Opened and closed by the
    caller."""

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await _configure(conn)
        await conn.set_autocommit(True)
        await conn.execute("SET application_name = 'memory-service-background'")
        await conn.set_autocommit(False)
        pid, host = conn.info.backend_pid, conn.info.host
        local = host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
        if settings.background_nice and local and is_postgres(pid):
            lower_priority(pid, settings.background_nice)

    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=1,
        open=False,
        configure=configure,
        check=AsyncConnectionPool.check_connection,
        kwargs={"options": f"-c statement_timeout={int(settings.db_statement_timeout_ms)}"},
        timeout=settings.db_pool_timeout_seconds,
        name="memory-service-background",
    )


def _standby(number: int, url: str, settings: Settings) -> Standby:
    name = f"standby-{number}"
    return Standby(
        name,
        AsyncConnectionPool(
            url,
            min_size=1,
            max_size=settings.db_pool_max,
            open=False,
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            kwargs={
                "options": f"-c statement_timeout={int(settings.db_statement_timeout_ms)}",
                "connect_timeout": 2,
                "cursor_factory": TimedCursor,
            },
            timeout=settings.db_pool_timeout_seconds,
            name=f"memory-service-{name}",
        ),
        CircuitBreaker(
            f"database {name}",
            failure_threshold=settings.breaker_failure_threshold,
            reset_seconds=settings.breaker_reset_seconds,
        ),
    )


def connect_sync(url: str) -> psycopg.Connection[Any]:
    """A plain synchronous connection (CLI, migrations, benchmarks)."""
    conn = psycopg.connect(url, autocommit=True)
    configure_values(conn)
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
        exc, psycopg.DataError | pg_errors.CheckViolation | pg_errors.NotNullViolation
    ):
        # a value the checks before the database missed (client-side DataErrors, too: a
        # NUL byte, a timestamp Python cannot hold); the message names the value class,
        # never SQL text
        reason = exc.diag.message_primary or (str(exc).splitlines() or [""])[0]
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
