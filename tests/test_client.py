"""The Python client against the real service: every operation, errors, pagination, SSE."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from memory_service_client import (
    OPERATIONS,
    AsyncMemoryClient,
    AuthenticationError,
    BadRequestError,
    MemoryClient,
    NotFoundError,
    PreconditionFailedError,
    ValidationError,
)

from tests.conftest import ADMIN_TOKEN


def _normalise(path: str) -> str:
    path = path.rstrip("/") or "/"
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", path)


@pytest.fixture
def admin(live_url: str) -> Iterator[MemoryClient]:
    with MemoryClient(live_url, admin_token=ADMIN_TOKEN) as c:
        yield c


@pytest.fixture
def mc(admin: MemoryClient) -> Iterator[MemoryClient]:
    tenant = admin.create_tenant(f"client-{uuid.uuid4().hex[:8]}")
    with admin.with_api_key(tenant["api_key"]) as c:
        yield c


def test_the_client_covers_every_operation_of_the_live_openapi_document(
    admin: MemoryClient,
) -> None:
    doc = admin._http.get("/schema/openapi.json").json()
    served = {
        (method.upper(), _normalise(path))
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    covered = {(op.method, _normalise(op.path)) for op in OPERATIONS.values()}
    assert served - covered == set(), "operations the client does not cover"
    assert covered - served == set(), "client operations the service does not serve"
    for name in OPERATIONS:
        assert callable(getattr(MemoryClient, name, None)), f"MemoryClient.{name} is missing"
        assert callable(getattr(AsyncMemoryClient, name, None)), f"AsyncMemoryClient.{name}"


def test_memories_round_trip_with_typed_errors(mc: MemoryClient) -> None:
    added = mc.add_memory("The user is allergic to peanuts", user_id="u1", metadata={"t": "food"})
    assert mc.get_memory(added["id"])["content"] == added["content"]
    hits = mc.search("food allergy", user_id="u1", k=3)["results"]
    assert hits[0]["memory"]["id"] == added["id"]
    updated = mc.update_memory(added["id"], if_match=1, importance=0.9)
    assert updated["version"] == 2
    with pytest.raises(PreconditionFailedError) as stale:
        mc.update_memory(added["id"], if_match=1, importance=0.1)
    assert stale.value.status == 412 and len(stale.value.trace_id or "") == 32
    assert [e["event"] for e in mc.memory_history(added["id"])["items"]] == ["ADD", "UPDATE"]
    with pytest.raises(BadRequestError) as bad:  # refused while decoding the body
        mc.add_memory("x", importance=3)
    assert any("importance" in e["field"] for e in bad.value.errors), bad.value.problem
    with pytest.raises(ValidationError) as invalid:  # refused by the service's rules
        mc.add_memory("   ")
    assert [e["field"] for e in invalid.value.errors] == ["content"]
    mc.delete_memory(added["id"])
    with pytest.raises(NotFoundError) as missing:
        mc.get_memory(added["id"])
    assert missing.value.problem["status"] == 404


def test_iterators_follow_cursors_and_keyed_memories_work(mc: MemoryClient) -> None:
    batch = mc.add_memories([{"content": f"fact number {i}", "run_id": "r"} for i in range(25)])
    ids = [m["id"] for m in batch["items"]]
    assert [m["id"] for m in mc.iter_memories(page_size=7, run_id="r")] == ids
    assert mc.delete_memories(run_id="r") == {"deleted": 25}

    created = mc.put_memory_by_key("users.u1.prefs", "drink", "prefers tea", metadata={"n": 1})
    replaced = mc.put_memory_by_key("users.u1.prefs", "drink", "prefers coffee")
    assert replaced["id"] == created["id"] and replaced["version"] == 2
    assert mc.get_memory_by_key("users.u1.prefs", "drink")["content"] == "prefers coffee"
    assert [n["namespace"] for n in mc.iter_namespaces(prefix="users", max_depth=2)] == ["users.u1"]
    mc.delete_memory_by_key("users.u1.prefs", "drink")
    with pytest.raises(NotFoundError):
        mc.get_memory_by_key("users.u1.prefs", "drink")


def test_tasks_environments_settings_and_service_operations(
    mc: MemoryClient, admin: MemoryClient
) -> None:
    env = mc.create_environment("staging", config={"region": "eu"})
    assert mc.get_environment(env["id"])["config"] == {"region": "eu"}
    assert mc.update_environment(env["id"], if_match=1, description="d")["version"] == 2
    assert [e["id"] for e in mc.iter_environments(page_size=1)] == [env["id"]]
    task = mc.create_task("write report", environment_id=env["id"], tags=["a"])
    done = mc.update_task(task["id"], status="completed")
    assert done["status"] == "completed"
    assert mc.reopen_task(task["id"])["status"] == "pending"
    assert [t["id"] for t in mc.iter_tasks(tag=["a"])] == [task["id"]]
    mc.delete_task(task["id"])
    mc.delete_environment(env["id"])
    assert mc.put_settings(True, 0.9) == mc.get_settings() == {"dedupe": True, "dedupe_threshold": 0.9}
    assert mc.health()["status"] and mc.ready()["status"]
    assert "memory" in mc.prometheus_metrics()
    assert "operations" in mc.metrics_summary("5m") and "score" in mc.health_score()
    assert "operations" in admin.admin_metrics_summary()
    tenant = admin.create_tenant("keys")
    extra = admin.create_api_key(tenant["id"])["api_key"]
    admin.revoke_api_key(tenant["id"], extra.split("_")[1])  # mk_<prefix>_<secret>
    with pytest.raises(AuthenticationError), admin.with_api_key(extra) as revoked:
        revoked.list_memories()


def test_event_stream_resumes_after_the_last_event_id(mc: MemoryClient) -> None:
    mc.record_events([{"type": f"tool.call.{i}"} for i in range(5)])
    # "0": from the tenant's first event (without an id a stream shows only new events)
    stream = mc.stream_events(type=["tool"], last_event_id="0", read_timeout=10)
    seen = []
    for event in stream:
        seen.append(event["type"])
        if len(seen) == 2:
            break
    stream.close()
    resumed = mc.stream_events(type=["tool"], last_event_id=stream.last_event_id, read_timeout=10)
    rest = []
    for event in resumed:
        rest.append(event["type"])
        if len(rest) == 3:
            break
    resumed.close()
    assert seen + rest == [f"tool.call.{i}" for i in range(5)]
    assert [e["type"] for e in mc.iter_events(page_size=2, type=["tool"])] == seen + rest


async def test_the_async_client_mirrors_the_blocking_one(live_url: str) -> None:
    async with AsyncMemoryClient(live_url, admin_token=ADMIN_TOKEN) as admin:
        tenant = await admin.create_tenant("async")
    async with AsyncMemoryClient(live_url, tenant["api_key"]) as ac:
        batch = await ac.add_memories([{"content": f"async fact {i}"} for i in range(5)])
        got: list[Any] = [m async for m in ac.iter_memories(page_size=2)]
        assert [m["id"] for m in got] == [m["id"] for m in batch["items"]]
        hits = (await ac.search("async fact 3", k=2))["results"]
        assert len(hits) == 2
        with pytest.raises(NotFoundError):
            await ac.get_memory(str(uuid.uuid4()))
        await ac.record_events([{"type": "async.one"}, {"type": "async.two"}])
        stream = ac.stream_events(type=["async"], last_event_id="0", read_timeout=10)
        types = []
        async for event in stream:
            types.append(event["type"])
            if len(types) == 2:
                break
        await stream.aclose()
        assert types == ["async.one", "async.two"]


def test_import_memories_sends_ndjson_and_returns_the_report(mc: MemoryClient) -> None:
    items = [{"content": "imported by the client", "run_id": "imp"}, {"content": "", "run_id": "imp"}]
    report = mc.import_memories(items)
    assert (report["lines"], report["created"], report["rejected"]) == (2, 0, 2)
    assert [e["line"] for e in report["errors"]] == [2]
    report = mc.import_memories(items[:1])
    assert (report["created"], report["batches_committed"]) == (1, 1)
    assert [m["content"] for m in mc.iter_memories(run_id="imp")] == ["imported by the client"]
