"""The offline-first replica against a real service that is stopped and started again:
offline reads and search, queued writes, and a conflicting server write resolved by
each policy; and live following that pushes the queue after a reconnect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from memory_service_client import Conflict, Replica

from memory_service.config import Settings
from tests.live_http import free_port, serve

Client = AsyncTestClient[Litestar]
VECTOR = [0.0] * 384
VECTOR[3] = 1.0


def live_settings(settings: Settings, database_url: str) -> Settings:
    return settings.with_(database_url=database_url, sse_heartbeat_seconds=0.5)


async def run(function: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(function, *args)


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await run(condition):
        assert time.monotonic() < deadline, "timed out"
        await anyio.sleep(0.1)


EXPECTED = {
    # policy -> (metadata, title, outcome) on the server after the push
    "server_wins": ({"a": 1, "b": 3}, "t", "kept_server"),
    "client_wins": ({"a": 2, "b": 1}, "local", "forced"),
    "merge": ({"a": 2, "b": 3}, "local", "merged"),
}


@pytest.mark.parametrize("policy", list(EXPECTED))
async def test_offline_writes_reconcile_by_policy(
    client: Client,
    tenant: dict[str, Any],
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    policy: str,
) -> None:
    h = tenant["headers"]
    task = (
        await client.post("/v1/tasks", json={"title": "t", "metadata": {"a": 1, "b": 1}}, headers=h)
    ).json()
    memory = (
        await client.post(
            "/v1/memories", json={"content": "the cat sat", "embedding": VECTOR}, headers=h
        )
    ).json()
    live, port = live_settings(settings, database_url), free_port()
    conflicts: list[Conflict] = []
    async with serve(live, port) as base:
        replica = Replica(
            base, tenant["api_key"], str(tmp_path / "r.db"), policy=policy,  # type: ignore[arg-type]
            on_conflict=conflicts.append,
        )
        assert await run(replica.sync)
    try:
        # the service is stopped: reads, search and writes still work locally
        assert not await run(replica.sync) and not replica.online
        assert replica.get("task", task["id"])["metadata"] == {"a": 1, "b": 1}
        found = await run(lambda: replica.search("cat", embedding=VECTOR, k=1))
        assert found["offline"] and found["strategy"] == "offline-exact"
        assert found["results"][0]["memory"]["id"] == memory["id"]
        assert found["results"][0]["score"] == pytest.approx(1.0)
        words = await run(lambda: replica.search("cat", k=1))
        assert words["strategy"] == "offline-keyword" and words["results"][0]["score"] == 1.0
        await run(replica.update, "task", task["id"], {"metadata": {"a": 2, "b": 1}, "title": "local"})
        made = await run(replica.create, "task", {"title": "made offline"})
        await run(replica.delete, "memory", memory["id"])
        assert replica.get("task", task["id"])["title"] == "local"
        assert replica.get("memory", memory["id"]) is None
        assert [p.op for p in replica.pending()] == ["update", "create", "delete"]
        # meanwhile conflicting writes reach the service another way
        r = await client.patch(
            f"/v1/tasks/{task['id']}",
            json={"metadata": {"a": 1, "b": 3}, "description": "server"},
            headers=h,
        )
        assert r.status_code == 200 and r.json()["version"] == 2
        r = await client.patch(
            f"/v1/memories/{memory['id']}", json={"metadata": {"kept": 1}}, headers=h
        )
        assert r.status_code == 200

        async with serve(live, port):
            assert await run(replica.sync)
            assert replica.pending() == []
            now = (await client.get(f"/v1/tasks/{task['id']}", headers=h)).json()
            metadata, title, outcome = EXPECTED[policy]
            # the server's own edit of a field this client left alone survives every policy
            assert (now["metadata"], now["title"], now["description"]) == (
                metadata,
                title,
                "server",
            )
            deleted = policy == "client_wins"
            assert [(c.id, c.op, c.outcome, c.server["version"]) for c in conflicts] == [  # type: ignore[index]
                (task["id"], "update", outcome, 2),
                (memory["id"], "delete", "deleted" if deleted else "kept_server", 2),
            ]
            gone = await client.get(f"/v1/memories/{memory['id']}", headers=h)
            assert gone.status_code == (404 if deleted else 200)
            server_id = replica.resolve_id(made["id"])
            assert server_id != made["id"]
            created = await client.get(f"/v1/tasks/{server_id}", headers=h)
            assert created.status_code == 200 and created.json()["title"] == "made offline"
            assert await run(replica.sync)
            assert replica.get("task", task["id"]) == now
            assert replica.get("task", made["id"]) == created.json()
            local = replica.get("memory", memory["id"])
            assert (local is None) if deleted else (local["metadata"] == {"kept": 1})
    finally:
        await run(replica.close)


async def test_follows_live_and_pushes_after_reconnect(
    client: Client, tenant: dict[str, Any], settings: Settings, database_url: str, tmp_path: Path
) -> None:
    h = tenant["headers"]
    live, port = live_settings(settings, database_url), free_port()
    conflicts: list[Conflict] = []
    replica = Replica(
        f"http://127.0.0.1:{port}", tenant["api_key"], str(tmp_path / "f.db"),
        on_conflict=conflicts.append,
    )
    try:
        async with serve(live, port):
            await run(replica.follow)
            await wait_for(lambda: replica.online)
            memory = (await client.post("/v1/memories", json={"content": "live"}, headers=h)).json()
            task = (await client.post("/v1/tasks", json={"title": "before"}, headers=h)).json()
            await wait_for(lambda: replica.get("memory", memory["id"]) is not None)
            await wait_for(lambda: replica.get("task", task["id"]) is not None)
        await wait_for(lambda: not replica.online)
        # two edits queued offline: one the service can take, one whose row it deleted
        await run(replica.update, "task", task["id"], {"title": "edited offline"})
        await run(replica.update, "memory", memory["id"], {"metadata": {"seen": True}})
        assert len(replica.pending()) == 2
        r = await client.delete(f"/v1/memories/{memory['id']}", headers=h)
        assert r.status_code == 204
        async with serve(live, port):
            await wait_for(lambda: replica.online and not replica.pending())
            # the queue was pushed, not dropped: the service holds the offline edit ...
            pushed = (await client.get(f"/v1/tasks/{task['id']}", headers=h)).json()
            assert pushed["title"] == "edited offline" and pushed["version"] == 2
            # ... and the edit that met the deletion was reported, and the tombstone followed
            assert [(c.id, c.op) for c in conflicts] == [(memory["id"], "update")]
            await wait_for(lambda: replica.get("memory", memory["id"]) is None)
            after = (await client.post("/v1/tasks", json={"title": "after"}, headers=h)).json()
            await wait_for(lambda: replica.get("task", after["id"]) is not None)
            assert replica.get("task", task["id"])["title"] == "edited offline"
    finally:
        await run(replica.close)
