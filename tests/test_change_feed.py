"""The change feed: commit order, every entity type, tombstones, retention, snapshots,
tenant isolation, secrets, and 412 answers that carry the current entity."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import assert_problem
from tests.live_http import in_app_loop

Client = AsyncTestClient[Litestar]


async def changes(client: Client, tenant: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = await client.get("/v1/changes", params=params, headers=tenant["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def latest_cursor(client: Client, tenant: dict[str, Any]) -> str:
    page = await changes(client, tenant, limit=1000)
    while page["has_more"]:
        page = await changes(client, tenant, since=page["next_cursor"], limit=1000)
    return str(page["next_cursor"])


async def test_a_transaction_that_commits_later_is_not_skipped(
    client: Client, tenant: dict[str, Any], database_url: str
) -> None:
    """T1 writes first and commits last; a reader that saw T2 must still get T1."""
    start = await latest_cursor(client, tenant)
    insert = "INSERT INTO tasks (tenant_id, title) VALUES (%s, %s)"
    with psycopg.connect(database_url) as t1, psycopg.connect(database_url) as t2:
        t1.execute(insert, (tenant["id"], "written first, committed last"))
        t2.execute(insert, (tenant["id"], "written second, committed first"))
        t2.commit()
        seen = await changes(client, tenant, since=start)
        assert [c["entity"]["title"] for c in seen["items"]] == [
            "written second, committed first"
        ]
        t1.commit()
    later = await changes(client, tenant, since=seen["next_cursor"])
    assert [c["entity"]["title"] for c in later["items"]] == ["written first, committed last"]
    again = await changes(client, tenant, since=later["next_cursor"])
    assert again["items"] == [] and again["next_cursor"] == later["next_cursor"]


async def test_every_entity_type_with_versions_and_tombstones(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    start = await latest_cursor(client, tenant)
    memory = (await client.post("/v1/memories", json={"content": "tea at five"}, headers=h)).json()
    r = await client.patch(
        f"/v1/memories/{memory['id']}", json={"metadata": {"k": 1}}, headers=h
    )
    assert r.status_code == 200, r.text
    task = (await client.post("/v1/tasks", json={"title": "brew"}, headers=h)).json()
    env = (
        await client.post(
            "/v1/environments",
            json={"name": "prod", "secrets": {"TOKEN": "s3cret-value-never-shown"}},
            headers=h,
        )
    ).json()
    assert (await client.delete(f"/v1/memories/{memory['id']}", headers=h)).status_code == 204

    page = await changes(client, tenant, since=start)
    got = [(c["type"], c["id"], c["op"], c["version"]) for c in page["items"]]
    assert got == [
        ("memory", memory["id"], "upsert", 1),
        ("memory", memory["id"], "upsert", 2),
        ("task", task["id"], "upsert", 1),
        ("environment", env["id"], "upsert", 1),
        ("memory", memory["id"], "delete", 3),
    ]
    first, second = page["items"][0]["entity"], page["items"][1]["entity"]
    assert first["content"] == "tea at five" and first["metadata"] == {}
    assert second["metadata"] == {"k": 1} and page["items"][-1]["entity"] is None
    assert page["items"][2]["entity"]["title"] == "brew"
    assert page["items"][3]["entity"]["secrets"] == ["TOKEN"]
    # each item's own cursor resumes right after it
    rest = await changes(client, tenant, since=page["items"][2]["cursor"])
    assert [c["type"] for c in rest["items"]] == ["environment", "memory"]
    only_tasks = await changes(client, tenant, since=start, types="task")
    assert [c["id"] for c in only_tasks["items"]] == [task["id"]]


async def test_secret_values_never_reach_the_feed_or_snapshot(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    secret = "zz-very-secret-value-41"
    env = (
        await client.post(
            "/v1/environments", json={"name": "ci", "secrets": {"KEY": secret}}, headers=h
        )
    ).json()
    r = await client.patch(
        f"/v1/environments/{env['id']}", json={"secrets": {"OTHER": secret + "b"}}, headers=h
    )
    assert r.status_code == 200
    feed = await client.get("/v1/changes", headers=h)
    snapshot = await client.get("/v1/changes/snapshot", headers=h)
    stale = await client.patch(
        f"/v1/environments/{env['id']}",
        json={"description": "x"},
        headers={**h, "If-Match": "1"},
    )
    assert stale.status_code == 412
    assert stale.json()["current"]["secrets"] == ["KEY", "OTHER"]
    for response in (feed, snapshot, stale):
        assert secret not in response.text
    assert [c["entity"]["secrets"] for c in feed.json()["items"]] == [["KEY"], ["KEY", "OTHER"]]


def read_snapshot(text: str) -> tuple[str, list[dict[str, Any]]]:
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[-1] == {"end": True, "count": len(lines) - 2}
    return lines[0]["cursor"], lines[1:-1]


async def test_old_cursor_is_gone_and_a_snapshot_recovers(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    start = await latest_cursor(client, tenant)
    kept = (await client.post("/v1/tasks", json={"title": "kept"}, headers=h)).json()
    gone = (await client.post("/v1/tasks", json={"title": "gone"}, headers=h)).json()
    assert (await client.delete(f"/v1/tasks/{gone['id']}", headers=h)).status_code == 204
    runtime = client.app.state.runtime
    future = datetime.now(UTC) + timedelta(seconds=runtime.settings.change_feed_retention_seconds)
    assert await in_app_loop(client, runtime.changes.prune_once, future) >= 3

    r = await client.get("/v1/changes", params={"since": start}, headers=h)
    body = assert_problem(r, 410, mentions="snapshot")
    assert "/v1/changes/snapshot" in body["detail"]
    stream = await client.get("/v1/changes/stream", headers={**h, "Last-Event-ID": start})
    assert_problem(stream, 410, mentions="snapshot")

    snap = await client.get("/v1/changes/snapshot", params={"types": "task"}, headers=h)
    assert snap.headers["content-type"].startswith("application/x-ndjson")
    cursor, items = read_snapshot(snap.text)
    assert [(i["type"], i["id"], i["version"]) for i in items] == [("task", kept["id"], 1)]
    assert items[0]["entity"]["title"] == "kept"
    assert (await changes(client, tenant, since=cursor))["items"] == []
    r = await client.patch(f"/v1/tasks/{kept['id']}", json={"status": "in_progress"}, headers=h)
    assert r.status_code == 200
    follow = await changes(client, tenant, since=cursor)
    assert [(c["id"], c["version"]) for c in follow["items"]] == [(kept["id"], 2)]


async def test_snapshot_with_embeddings(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    vector = [0.0] * 384
    vector[7] = 1.0
    await client.post("/v1/memories", json={"content": "v", "embedding": vector}, headers=h)
    snap = await client.get(
        "/v1/changes/snapshot", params={"types": "memory", "include": "embedding"}, headers=h
    )
    _, items = read_snapshot(snap.text)
    import base64

    import numpy as np

    got = np.frombuffer(base64.b64decode(items[0]["embedding_b64"]), dtype="<f4")
    assert got.shape == (384,) and got[7] == 1.0
    page = await changes(client, tenant, include="embedding")
    assert page["items"][0]["embedding_b64"] == items[0]["embedding_b64"]


async def test_feed_stream_and_snapshot_are_confined_to_the_tenant(
    client: Client, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    mine = (await client.post("/v1/tasks", json={"title": "mine"}, headers=tenant["headers"]))
    assert mine.status_code == 201
    theirs = await changes(client, other_tenant)
    assert theirs["items"] == []
    snap = await client.get("/v1/changes/snapshot", headers=other_tenant["headers"])
    assert read_snapshot(snap.text)[1] == []
    # a cursor is bound to its tenant
    my_cursor = (await changes(client, tenant))["next_cursor"]
    r = await client.get(
        "/v1/changes", params={"since": my_cursor}, headers=other_tenant["headers"]
    )
    assert_problem(r, 422, mentions="cursor")
    r = await client.get(
        "/v1/changes/stream", headers={**other_tenant["headers"], "Last-Event-ID": my_cursor}
    )
    assert_problem(r, 422)


async def test_bad_feed_parameters_are_named(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r = await client.get("/v1/changes", params={"types": "memory,widget"}, headers=h)
    body = assert_problem(r, 422, mentions="widget")
    assert body["errors"][0]["field"] == "types"
    assert_problem(await client.get("/v1/changes", params={"since": "x.y"}, headers=h), 422)
    assert_problem(await client.get("/v1/changes", params={"limit": 0}, headers=h), 400)
    r = await client.get("/v1/changes/snapshot", params={"include": "secrets"}, headers=h)
    assert_problem(r, 422, mentions="include")


async def test_a_stale_if_match_answers_412_with_the_current_entity(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    memory = (await client.post("/v1/memories", json={"content": "draft"}, headers=h)).json()
    await client.patch(f"/v1/memories/{memory['id']}", json={"content": "final"}, headers=h)
    r = await client.patch(
        f"/v1/memories/{memory['id']}",
        json={"importance": 0.9},
        headers={**h, "If-Match": '"1"'},
    )
    body = assert_problem(r, 412)
    assert body["current"]["content"] == "final" and body["current"]["version"] == 2
    assert r.headers["etag"] == '"2"'
    task = (await client.post("/v1/tasks", json={"title": "a"}, headers=h)).json()
    await client.patch(f"/v1/tasks/{task['id']}", json={"title": "b"}, headers=h)
    r = await client.patch(
        f"/v1/tasks/{task['id']}", json={"title": "c"}, headers={**h, "If-Match": "1"}
    )
    assert assert_problem(r, 412)["current"] == {
        **(await client.get(f"/v1/tasks/{task['id']}", headers=h)).json()
    }


async def test_a_stale_if_match_on_delete_answers_412_and_keeps_the_entity(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    made = {
        "memories": (await client.post("/v1/memories", json={"content": "x"}, headers=h)).json(),
        "tasks": (await client.post("/v1/tasks", json={"title": "x"}, headers=h)).json(),
        "environments": (
            await client.post("/v1/environments", json={"name": "x"}, headers=h)
        ).json(),
    }
    for path, entity in made.items():
        url = f"/v1/{path}/{entity['id']}"
        change = {"environments": {"description": "y"}}.get(path, {"metadata": {"y": 1}})
        assert (await client.patch(url, json=change, headers=h)).status_code == 200
        stale = await client.delete(url, headers={**h, "If-Match": "1"})
        assert assert_problem(stale, 412)["current"]["version"] == 2
        assert (await client.get(url, headers=h)).status_code == 200
        fresh = await client.delete(url, headers={**h, "If-Match": '"2"'})
        assert fresh.status_code == 204
        assert (await client.get(url, headers=h)).status_code == 404


async def test_executions_are_in_the_feed_with_each_new_head(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    start = await latest_cursor(client, tenant)
    made = await client.post("/v1/executions", json={"agent_id": "planner"}, headers=h)
    assert made.status_code == 201, made.text
    eid = made.json()["id"]
    step = await client.post(
        f"/v1/executions/{eid}/steps", json={"kind": "llm", "name": "think", "state": {"n": 1}}, headers=h
    )
    assert step.status_code == 201, step.text
    done = await client.patch(f"/v1/executions/{eid}", json={"status": "succeeded"}, headers=h)
    assert done.status_code == 200, done.text
    page = await changes(client, tenant, since=start, types="execution")
    got = [(c["version"], c["entity"]["head_seq"], c["entity"]["status"]) for c in page["items"]]
    assert got == [(1, 0, "running"), (1, 1, "running"), (2, 1, "succeeded")]
    now = (await client.get(f"/v1/executions/{eid}", headers=h)).json()
    assert page["items"][-1]["entity"] == now
    snap = await client.get("/v1/changes/snapshot", params={"types": "executions"}, headers=h)
    assert [i["entity"] for i in read_snapshot(snap.text)[1]] == [now]
    stale = await client.patch(
        f"/v1/executions/{eid}", json={"metadata": {"x": 1}}, headers={**h, "If-Match": "1"}
    )
    assert assert_problem(stale, 412)["current"] == now
