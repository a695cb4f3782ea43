"""The event outbox: workflow transitions stage their events, the mover brings them into the log.

A run's events reach the log and a live stream in the order its transitions
committed, each once; events a process staged and did not move (it stopped
between commit and move) are moved by the next runtime to start; and a mover
that fails is logged, counted and shown by the supervisor, and moves everything
once the cause is gone. The last two run on a database of their own, so that no
other runtime's mover can move the rows first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import new_tenant
from helpers import db_rows
from live_http import SSEReader, serve
from psycopg.conninfo import make_conninfo
from workflow_helpers import claim, complete, put_workflow, start

from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder
from memory_service.events import outbox
from memory_service.events.models import NewEvent
from memory_service.infra import migrate
from memory_service.runtime import Runtime

CHAIN = {"steps": [
    {"id": "a", "kind": "task", "input": {"n": {"$ref": "input.n"}}},
    {"id": "b", "kind": "task", "depends_on": ["a"], "input": {"x": {"$ref": "steps.a.output.v"}}},
]}  # fmt: skip
EXPECTED = [
    ("workflow.run.started", None),
    ("workflow.step.ready", "a"),
    ("workflow.step.claimed", "a"),
    ("workflow.step.completed", "a"),
    ("workflow.step.ready", "b"),
    ("workflow.step.claimed", "b"),
    ("workflow.step.completed", "b"),
    ("workflow.run.completed", None),
]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_runs_events_reach_the_log_and_a_live_stream_in_commit_order(
    client: Any, settings: Settings, database_url: str
) -> None:
    tenant = await new_tenant(client)
    h = tenant["headers"]
    name = await put_workflow(client, h, CHAIN)
    fast = settings.with_(sse_heartbeat_seconds=0.5, database_url=database_url)
    async with (
        serve(fast) as other,
        httpx.AsyncClient(timeout=20, headers=h) as http,
        # served by another app: the mover's NOTIFY crosses to it
        http.stream("GET", f"{other}/v1/events/stream", params={"type": "workflow."}) as response,
    ):
        reader = SSEReader(response)
        await asyncio.sleep(0.3)
        run = await start(client, h, name, {"n": 2})
        for _ in range(2):
            [attempt] = await claim(client, h, wait_s=5)
            assert (await complete(client, h, attempt, {"v": 1})).status_code == 200
        # read right after the last completion answered: its events are in the log already
        r = await client.get("/v1/events", params={"workflow_run_id": run["id"]}, headers=h)
        logged = r.json()["items"]
        streamed = [await reader.next_event() for _ in EXPECTED]
    for events in (streamed, logged):
        assert [(e["type"], e["attributes"].get("step_id")) for e in events] == EXPECTED
        assert all(e["attributes"]["workflow_run_id"] == run["id"] for e in events)
    numbers = [e["sequence"] for e in logged]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert [e["sequence"] for e in streamed] == numbers  # the same events, each once
    staged = db_rows(database_url, "SELECT count(*) FROM event_outbox WHERE tenant_id = %s",
                     tenant["id"])  # fmt: skip
    assert staged == [(0,)]


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    migrate.run_migrations(url, 384)
    try:
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )


@pytest.fixture
async def runtime_settings(settings: Settings, own_database: str, tmp_path: Any) -> Settings:
    # a poll interval no test waits for: whatever moves, moves because it was told to
    return settings.with_(
        database_url=own_database,
        data_dir=str(tmp_path),
        faiss_preload=False,
        event_outbox_poll_interval_s=300.0,
        background_restart_initial_s=0.05,
        background_restart_max_s=0.2,
    )


async def start_runtime(settings: Settings) -> Runtime:
    return await Runtime.start(settings, embedder=HashEmbedder(384))


async def stage(url: str, tenant_id: uuid.UUID, *types: str) -> None:
    """Events as a transition stages them, committed, with no runtime to move them."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await outbox.stage(conn, {tenant_id: [NewEvent(type=t, attributes={"i": i})
                                              for i, t in enumerate(types)]})  # fmt: skip


def ddl(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL(statement))  # type: ignore[arg-type]


def logged(url: str, tenant_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return db_rows(url, "SELECT number, type FROM events WHERE tenant_id = %s ORDER BY seq",
                   tenant_id)  # fmt: skip


async def test_events_staged_before_a_stop_are_moved_by_the_next_runtime(
    runtime_settings: Settings, own_database: str
) -> None:
    first = await start_runtime(runtime_settings)
    try:
        tenant, _ = await first.tenants.create_tenant("outbox")
    finally:
        await first.close()
    tenant_id = uuid.UUID(tenant.id)
    await stage(own_database, tenant_id, "test.one", "test.two")
    await stage(own_database, tenant_id, "test.three")
    assert logged(own_database, tenant_id) == []
    began = time.monotonic()
    second = await start_runtime(runtime_settings)
    try:

        async def moved() -> bool:
            return len(logged(own_database, tenant_id)) == 3

        await eventually(moved)
        assert time.monotonic() - began < 60  # drained at start, not at the 300 s poll
        assert logged(own_database, tenant_id) == [
            (1, "test.one"), (2, "test.two"), (3, "test.three")
        ]  # fmt: skip
        assert second.event_outbox.moved == 3
        assert db_rows(own_database, "SELECT count(*) FROM event_outbox") == [(0,)]
    finally:
        await second.close()


async def test_a_failing_mover_is_shown_by_the_supervisor_and_retried(
    runtime_settings: Settings, own_database: str
) -> None:
    runtime = await start_runtime(runtime_settings)
    renamed = False
    try:
        tenant, _ = await runtime.tenants.create_tenant("outbox-failure")
        tenant_id = uuid.UUID(tenant.id)

        def mover() -> Any:
            return next(s for s in runtime.supervisor.states() if s.name == "event-outbox")

        # the log is away (a real failure of the move, not a simulated one)
        ddl(own_database, "ALTER TABLE events RENAME TO events_away")
        renamed = True
        await stage(own_database, tenant_id, "test.waiting")
        runtime.event_outbox.touched([tenant_id])

        async def failed_twice() -> bool:
            return bool(mover().failures >= 2)

        await eventually(failed_twice)
        state = mover()
        assert state.last_error == "Unavailable" and state.restarts >= 1, state
        health = {c.name: c for c in runtime.supervisor.health_components()}
        assert health["background.event-outbox"].score > 0
        assert db_rows(own_database, "SELECT count(*) FROM event_outbox") == [(1,)]  # kept

        ddl(own_database, "ALTER TABLE events_away RENAME TO events")
        renamed = False

        async def moved() -> bool:
            return logged(own_database, tenant_id) == [(1, "test.waiting")]

        await eventually(moved)  # restarted after its back-off: nothing was lost
        assert mover().state == "running"
        assert db_rows(own_database, "SELECT count(*) FROM event_outbox") == [(0,)]
    finally:
        if renamed:
            ddl(own_database, "ALTER TABLE events_away RENAME TO events")
        await runtime.close()


async def test_commits_right_behind_a_wake_join_its_move(
    runtime_settings: Settings, own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the wait is widened so that a slow box still commits the second batch inside it
    monkeypatch.setattr(outbox, "MOVE_DELAY_S", 1.0)
    runtime = await start_runtime(runtime_settings)
    try:
        tenant, _ = await runtime.tenants.create_tenant("outbox-together")
        tenant_id = uuid.UUID(tenant.id)
        mover = runtime.event_outbox
        before = mover.moves
        await stage(own_database, tenant_id, "test.one")
        mover.touched([tenant_id])  # as a transition does after its commit
        await stage(own_database, tenant_id, "test.two", "test.three")
        mover.touched([tenant_id])

        async def moved() -> bool:
            return len(logged(own_database, tenant_id)) == 3

        await eventually(moved)
        assert logged(own_database, tenant_id) == [
            (1, "test.one"), (2, "test.two"), (3, "test.three")
        ]  # fmt: skip
        assert mover.moves - before == 1  # both commits' events in one transaction
    finally:
        await runtime.close()
