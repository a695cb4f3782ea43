"""Tasks over the real app and database: CRUD, status machine, filters, sorts, cursors."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import assert_problem


async def make_task(client: Any, tenant: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"title": fields.pop("title", f"task {uuid.uuid4().hex[:6]}"), **fields}
    response = await client.post("/v1/tasks", json=body, headers=tenant["headers"])
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_get_patch_delete(client: Any, tenant: dict[str, Any]) -> None:
    task = await make_task(
        client,
        tenant,
        title="Write report",
        description="quarterly",
        priority="high",
        agent_id="agent-1",
        tags=["a", "b"],
        metadata={"k": 1, "note": "NaN and Infinity are words here"},
    )
    assert task["status"] == "pending" and task["version"] == 1
    assert task["tags"] == ["a", "b"] and task["completed_at"] is None
    got = await client.get(f"/v1/tasks/{task['id']}", headers=tenant["headers"])
    assert got.status_code == 200 and got.json() == task
    assert got.headers["etag"] == '"1"'
    patched = await client.patch(
        f"/v1/tasks/{task['id']}",
        json={"status": "in_progress"},
        headers={**tenant["headers"], "If-Match": "1"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "in_progress" and patched.json()["version"] == 2
    stale = await client.patch(
        f"/v1/tasks/{task['id']}",
        json={"title": "x"},
        headers={**tenant["headers"], "If-Match": "1"},
    )
    assert_problem(stale, 412)
    done = await client.patch(
        f"/v1/tasks/{task['id']}", json={"status": "completed"}, headers=tenant["headers"]
    )
    assert done.json()["completed_at"] is not None
    deleted = await client.delete(f"/v1/tasks/{task['id']}", headers=tenant["headers"])
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/tasks/{task['id']}", headers=tenant["headers"])
    assert_problem(gone, 404)


async def test_status_machine_and_reopen(client: Any, tenant: dict[str, Any]) -> None:
    task = await make_task(client, tenant)
    url = f"/v1/tasks/{task['id']}"
    for status in ("in_progress", "completed"):
        r = await client.patch(url, json={"status": status}, headers=tenant["headers"])
        assert r.status_code == 200, r.text
    back = await client.patch(url, json={"status": "pending"}, headers=tenant["headers"])
    assert_problem(back, 409, mentions="reopen")
    early = await client.post(
        f"/v1/tasks/{(await make_task(client, tenant))['id']}/reopen", headers=tenant["headers"]
    )
    assert_problem(early, 409)
    reopened = await client.post(f"{url}/reopen", headers=tenant["headers"])
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["status"] == "pending" and reopened.json()["completed_at"] is None


async def test_filters(client: Any, tenant: dict[str, Any]) -> None:
    env = await client.post("/v1/environments", json={"name": "filters"}, headers=tenant["headers"])
    env_id = env.json()["id"]
    a = await make_task(
        client,
        tenant,
        title="Alpha deploy",
        priority="urgent",
        tags=["ops"],
        agent_id="x",
        environment_id=env_id,
    )
    b = await make_task(
        client,
        tenant,
        title="Beta",
        description="contains DEPLOY word",
        priority="low",
        tags=["ops", "docs"],
        agent_id="y",
    )
    c = await make_task(client, tenant, title="Gamma", status="in_progress")
    h = tenant["headers"]

    async def ids(params: dict[str, Any]) -> set[str]:
        r = await client.get("/v1/tasks", params=params, headers=h)
        assert r.status_code == 200, r.text
        return {t["id"] for t in r.json()["items"]}

    assert await ids({"status": "in_progress"}) == {c["id"]}
    assert await ids({"priority": ["urgent", "low"]}) == {a["id"], b["id"]}
    assert await ids({"environment_id": env_id}) == {a["id"]}
    assert await ids({"agent_id": "y"}) == {b["id"]}
    assert await ids({"tag": "ops"}) == {a["id"], b["id"]}
    assert await ids({"tag": ["ops", "docs"]}) == {b["id"]}
    assert await ids({"q": "deploy"}) == {a["id"], b["id"]}
    assert await ids({"q": "100%"}) == set()
    assert await ids({"created_after": a["created_at"], "created_before": c["created_at"]}) == {
        a["id"],
        b["id"],
    }


async def test_every_sort_pages_exactly_once_under_inserts(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    priorities = ["low", "medium", "high", "urgent"]
    for i in range(12):
        await make_task(client, tenant, title=f"t{i % 5}", priority=priorities[i % 4])
    for sort in (
        "created_at",
        "-created_at",
        "updated_at",
        "-updated_at",
        "priority",
        "-priority",
        "title",
        "-title",
    ):
        seen: list[str] = []
        cursor = None
        inserted: list[str] = []
        while True:
            params: dict[str, Any] = {"sort": sort, "limit": 5}
            if cursor:
                params["cursor"] = cursor
            r = await client.get("/v1/tasks", params=params, headers=h)
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
            # an insert between pages must not make the walk repeat or skip a row
            inserted.append((await make_task(client, tenant, title="t2", priority="high"))["id"])
        assert len(seen) == len(set(seen)), sort
        everything = await client.get("/v1/tasks", params={"limit": 1000}, headers=h)
        all_ids = {t["id"] for t in everything.json()["items"]}
        assert all_ids - set(inserted) <= set(seen), sort


async def test_bad_input(client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    assert_problem(await client.post("/v1/tasks", json={}, headers=h), 400)
    assert_problem(await client.post("/v1/tasks", json={"title": " "}, headers=h), 422)
    assert_problem(
        await client.post("/v1/tasks", json={"title": "x", "status": "done"}, headers=h), 400
    )
    assert_problem(await client.post("/v1/tasks", json={"title": "x", "bogus": 1}, headers=h), 400)
    assert_problem(await client.post("/v1/tasks", json={"title": "x" * 600}, headers=h), 413)
    assert_problem(
        await client.post("/v1/tasks", json={"title": "x", "metadata": {"a": "\x00"}}, headers=h),
        422,
    )
    assert_problem(
        await client.post(
            "/v1/tasks", json={"title": "x", "environment_id": "not-a-uuid"}, headers=h
        ),
        422,
    )
    assert_problem(
        await client.post(
            "/v1/tasks", json={"title": "x", "environment_id": str(uuid.uuid4())}, headers=h
        ),
        422,
        mentions="environment",
    )
    assert_problem(await client.get("/v1/tasks", params={"cursor": "junk"}, headers=h), 422)
    assert_problem(await client.get("/v1/tasks", params={"sort": "nope"}, headers=h), 400)
    assert_problem(await client.get("/v1/tasks/not-a-uuid", headers=h), 422)
    task = await make_task(client, tenant)
    assert_problem(await client.patch(f"/v1/tasks/{task['id']}", json={}, headers=h), 422)
    assert_problem(
        await client.patch(
            f"/v1/tasks/{task['id']}", json={"title": "x"}, headers={**h, "If-Match": "abc"}
        ),
        422,
    )
    # another tenant's task and environment behave like missing rows
    other = other_tenant["headers"]
    assert_problem(await client.get(f"/v1/tasks/{task['id']}", headers=other), 404)
    assert_problem(
        await client.patch(f"/v1/tasks/{task['id']}", json={"title": "y"}, headers=other), 404
    )
    assert_problem(await client.delete(f"/v1/tasks/{task['id']}", headers=other), 404)
    assert_problem(await client.post(f"/v1/tasks/{task['id']}/reopen", headers=other), 404)
    listed = await client.get("/v1/tasks", headers=other)
    assert task["id"] not in {t["id"] for t in listed.json()["items"]}
    env = await client.post("/v1/environments", json={"name": "mine"}, headers=h)
    assert_problem(
        await client.post(
            "/v1/tasks", json={"title": "x", "environment_id": env.json()["id"]}, headers=other
        ),
        422,
    )
    unchanged = await client.get(f"/v1/tasks/{task['id']}", headers=h)
    assert unchanged.json() == task
    assert_problem(await client.get("/v1/tasks"), 401)
