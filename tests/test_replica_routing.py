"""Read routing without a replication pair: tokens, URL lists, the breaker's trip, and
the app with a "standby" that is the test database itself (or a port nobody answers).
The real primary-and-standby run is ``test_read_replicas.py``."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from memory_service.config import Settings, SettingsError
from memory_service.embedding.embeddings import Embedder
from memory_service.errors import InvalidInput
from memory_service.infra.replicas import (
    SERVED_BY_HEADER,
    TOKEN_HEADER,
    RoutedPool,
    format_token,
    parse_token,
    split_urls,
)
from memory_service.infra.resilience import CircuitBreaker
from tests.conftest import new_tenant
from tests.live_http import free_port

Client = AsyncTestClient[Litestar]


def test_tokens_are_lsns_and_round_trip() -> None:
    assert parse_token("0/3A1F2C8") == 0x3A1F2C8
    assert parse_token("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_token(parse_token("16/B374D848")) == "16/B374D848"
    for bad in ("", "3A1F2C8", "0/xyz", "1/2/3", "123456789/0"):
        with pytest.raises(InvalidInput):
            parse_token(bad)


def test_replica_urls_keep_their_own_commas() -> None:
    raw = "postgresql://a:1/db, postgresql://b:2,c:3/db?target_session_attrs=any,postgres://d/db"
    assert split_urls(raw) == [
        "postgresql://a:1/db",
        "postgresql://b:2,c:3/db?target_session_attrs=any",
        "postgres://d/db",
    ]
    assert split_urls(None) == [] and split_urls(" , ") == []


def test_replica_settings_are_read_and_checked() -> None:
    env = {"MEMORY_DATABASE_REPLICA_URLS": "postgresql://s/db", "MEMORY_REPLICA_WAIT_MS": "50"}
    settings = Settings.from_env(env)
    assert settings.database_replica_urls == "postgresql://s/db"
    assert settings.replica_wait_ms == 50.0
    with pytest.raises(SettingsError, match="MEMORY_REPLICA_MAX_LAG_S"):
        Settings.from_env({"MEMORY_REPLICA_MAX_LAG_S": "0"})


def test_a_tripped_breaker_stays_open_until_a_good_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker("standby", failure_threshold=5, reset_seconds=1.0, clock=lambda: now[0])
    breaker.trip()
    assert breaker.state == "open" and breaker.times_opened == 1
    breaker.trip()  # still lagging: stays open, counted once
    assert breaker.times_opened == 1
    now[0] = 5.0
    assert breaker.state == "half_open"
    breaker.record_success(probe=True)
    assert breaker.state == "closed"


async def test_without_replicas_nothing_changes(client: Client, tenant: dict[str, Any]) -> None:
    assert not isinstance(client.app.state.runtime.pool, RoutedPool)
    added = await client.post("/v1/memories", json={"content": "plain"}, headers=tenant["headers"])
    assert added.status_code == 201
    assert TOKEN_HEADER not in added.headers
    read = await client.get(f"/v1/memories/{added.json()['id']}", headers=tenant["headers"])
    assert read.status_code == 200 and SERVED_BY_HEADER not in read.headers


async def test_routing_with_a_standby_url(
    settings: Settings, database_url: str, real_embedder: Embedder
) -> None:
    """The test database named as a standby too (not in recovery, so never behind) and a
    standby that does not answer: reads go to the one that does, writes answer tokens."""
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    routed = settings.with_(
        database_url=database_url,
        database_replica_urls=f"{database_url},{dead}",
        replica_check_interval_s=0.2,
    )
    app = create_app(routed, embedder=real_embedder)
    async with AsyncTestClient(app=app, timeout=60) as client:
        pool = app.state.runtime.pool
        assert isinstance(pool, RoutedPool)
        states = {s["name"]: s for s in pool.replicas.stats()}
        assert states["standby-1"]["reachable"] and not states["standby-2"]["reachable"]
        assert states["standby-2"]["state"] != "closed"
        tenant = await new_tenant(client)
        h = tenant["headers"]
        added = await client.post("/v1/memories", json={"content": "routed"}, headers=h)
        assert added.status_code == 201
        token = added.headers[TOKEN_HEADER]
        assert parse_token(token) > 0
        for _ in range(4):  # never the standby that is down
            read = await client.get(
                f"/v1/memories/{added.json()['id']}", headers={**h, TOKEN_HEADER: token}
            )
            assert read.status_code == 200, read.text
            assert read.headers[SERVED_BY_HEADER] == "standby-1"
        listed = await client.get("/v1/memories", headers=h)
        assert listed.headers[SERVED_BY_HEADER] == "standby-1"
        bad = await client.get("/v1/memories", headers={**h, TOKEN_HEADER: "0/zz"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith(
            "application/problem+json"
        )
        metrics = (await client.get("/metrics")).text
        assert 'memory_db_reads_total{node="standby-1"}' in metrics
        assert 'memory_circuit_state{dependency="database standby-2"} 2.0' in metrics
        # the standby monitor is one of the supervised loops: counted and restarted
        assert 'memory_background_restarts_total{loop="replica-monitor"} 0.0' in metrics
        running = {s.name: s.state for s in app.state.runtime.supervisor.states()}
        assert running["replica-monitor"] == "running"
