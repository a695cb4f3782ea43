"""Browser-storage migration over the real app: dry run, jobs, idempotence, rollback.

The example file shipped in ``docs/examples`` is the input, so the documented
format is the tested one. Everything runs against the real database, the real
model embeds the memories, and progress is read back from the event log.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from conftest import assert_problem
from live_http import in_app_loop

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = json.loads((DOCS / "examples" / "browser-storage.json").read_text())
URL = "/v1/migrations/browser-storage"


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def edit_store(doc: dict[str, Any], key: str, change: Any) -> dict[str, Any]:
    store = json.loads(doc[key])
    change(store)
    doc[key] = json.dumps(store)
    return doc


async def wait_done(client: Any, tenant: dict[str, Any], job_id: str) -> dict[str, Any]:
    for _ in range(600):
        r = await client.get(f"/v1/migrations/{job_id}", headers=tenant["headers"])
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("pending", "running"):
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError("the migration did not finish")


async def migrate(client: Any, tenant: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(URL, json=doc, headers=tenant["headers"])
    assert r.status_code == 202, r.text
    return await wait_done(client, tenant, r.json()["id"])


async def listing(client: Any, tenant: dict[str, Any], what: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/{what}", params={"limit": 1000}, headers=tenant["headers"])
    assert r.status_code == 200, r.text
    return sorted(r.json()["items"], key=lambda x: x["id"])


async def everything(client: Any, tenant: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {w: await listing(client, tenant, w) for w in ("tasks", "environments", "memories")}


def test_example_matches_the_schema() -> None:
    schema = json.loads((DOCS / "browser-storage.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(EXAMPLE, schema)
    store_schema = {**schema["$defs"]["store"], "$defs": schema["$defs"]}
    for key in ("platform-tasks", "platform-environments", "platform-memories"):
        jsonschema.validate(json.loads(EXAMPLE[key]), store_schema)


async def test_dry_run_reports_and_writes_nothing(client: Any, tenant: dict[str, Any]) -> None:
    doc = example()
    doc["platform-notes"] = "{not json"
    doc["platform-more-memories"] = json.dumps({"state": {"memories": [
        {"id": "big", "content": "x" * 40_000}, {"content": "no id"}]}, "version": 1})
    doc["platform-memories"] = doc["platform-memories"].replace('"version": 0', '"version": 7')
    edit_store(doc, "platform-tasks", lambda s: s["state"]["tasks"].extend([
        {"id": "t-1", "title": "the same id twice"},
        {"id": "t-9", "title": "x" * 600},
        {"id": "t-10", "title": "ok", "status": "someday"},
        {"id": "t-11", "title": "ok", "environmentId": "env-missing"},
    ]))
    r = await client.post(URL, params={"dry_run": "true"}, json=doc, headers=tenant["headers"])
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and report["valid"] is False
    assert report["counts"] == {"environments": 2, "tasks": 4, "memories": 0}
    assert report["actions"]["tasks"] == {"create": 4}
    rejected = {(x["key"], x["pointer"]): x["reason"] for x in report["rejected"]}
    assert "not JSON" in rejected[("platform-notes", "")]
    assert "limit" in rejected[("platform-more-memories", "/state/memories/0/content")]
    assert "id is required" in rejected[("platform-more-memories", "/state/memories/1/id")]
    assert "version" in rejected[("platform-memories", "/version")]
    assert "duplicate source id" in rejected[("platform-tasks", "/state/tasks/4/id")]
    assert "500" in rejected[("platform-tasks", "/state/tasks/5/title")]
    assert "someday" in rejected[("platform-tasks", "/state/tasks/6/status")]
    assert "env-missing" in rejected[("platform-tasks", "/state/tasks/7/environmentId")]
    assert sorted(report["ignored_keys"]) == ["sidebar-collapsed", "theme"]
    assert await everything(client, tenant) == {"tasks": [], "environments": [], "memories": []}
    # the same invalid file as a real migration is a 422 naming each item; nothing written
    r = await client.post(URL, json=doc, headers=tenant["headers"])
    body = assert_problem(r, 422)
    fields = {e["field"] for e in body["errors"]}
    assert "platform-tasks/state/tasks/6/status" in fields
    assert await everything(client, tenant) == {"tasks": [], "environments": [], "memories": []}


async def test_migration_maps_fields_and_reports_progress(
    client: Any, tenant: dict[str, Any]
) -> None:
    job = await migrate(client, tenant, example())
    assert job["status"] == "completed", job
    assert job["total"] == job["done"] == {"environments": 2, "tasks": 4, "memories": 3}
    assert job["outcome"]["memories"] == {"created": 3}
    state = await everything(client, tenant)
    tasks = {t["title"]: t for t in state["tasks"]}
    envs = {e["name"]: e for e in state["environments"]}
    report = tasks["Draft the quarterly report"]
    assert report["status"] == "pending" and report["priority"] == "high"
    assert report["environment_id"] == envs["staging"]["id"]
    assert report["created_at"].startswith("2024-05-29T16:26:40")  # 1717000000000 ms
    assert report["metadata"] == {"estimateHours": 3, "assignee": "ana"}
    assert tasks["Crawl competitor pricing"]["status"] == "in_progress"
    assert tasks["Summarise support tickets"]["status"] == "completed"
    assert tasks["Summarise support tickets"]["completed_at"] is not None
    retry = tasks["Retry the failed import"]
    assert (retry["status"], retry["priority"]) == ("failed", "urgent")
    staging = envs["staging"]
    assert staging["secrets"] == ["API_TOKEN"] and "s3cr3t" not in json.dumps(state)
    assert staging["config"] == {
        "region": "eu-west-1", "variables": {"LOG_LEVEL": "debug"}, "metadata": {"color": "#ffaa00"}
    }
    assert envs["scraper"]["is_active"] is False
    memories = {m["content"][:10]: m for m in state["memories"]}
    assert memories["Ana prefer"]["metadata"] == {"topic": "preferences", "pinned": True}
    assert memories["Competitor"]["metadata"] == {"tags": ["pricing"]}
    assert memories["Competitor"]["run_id"] == "run-7"
    found = await client.post(
        "/v1/memories/search", json={"query": "when does staging reset?", "k": 1},
        headers=tenant["headers"],
    )
    assert found.json()["results"][0]["memory"]["namespace"] == "infra"
    # progress went to the event log, in order, then the completion
    events = await client.get(
        "/v1/events", params={"type": "migration", "limit": 100}, headers=tenant["headers"]
    )
    items = [e for e in events.json()["items"] if e["attributes"]["migration_id"] == job["id"]]
    progress = [e["attributes"]["done_all"] for e in items if e["type"] == "migration.progress"]
    assert progress == sorted(progress) and progress[-1] == 9 and len(progress) == 3
    assert items[-1]["type"] == "migration.completed"


async def test_rerun_creates_nothing_twice(client: Any, tenant: dict[str, Any]) -> None:
    await migrate(client, tenant, example())
    before = await everything(client, tenant)
    again = await migrate(client, tenant, example())
    assert again["status"] == "completed"
    assert again["outcome"] == {
        "environments": {"unchanged": 2}, "tasks": {"unchanged": 4}, "memories": {"unchanged": 3}
    }
    assert await everything(client, tenant) == before
    dry = await client.post(URL, params={"dry_run": "true"}, json=example(),
                            headers=tenant["headers"])
    assert dry.json()["actions"]["tasks"] == {"unchanged": 4}


async def test_rollback_restores_exactly(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mine = await client.post(
        "/v1/environments",
        json={"name": "staging", "config": {"mine": True}, "secrets": {"OLD": "x"}}, headers=h,
    )
    assert mine.status_code == 201, mine.text
    initial = await everything(client, tenant)
    first = await migrate(client, tenant, example())
    assert first["outcome"]["environments"] == {"updated": 1, "created": 1}
    after_first = await everything(client, tenant)
    changed = edit_store(example(), "platform-tasks",
                         lambda s: s["state"]["tasks"][0].update(title="Draft the annual report"))
    second = await migrate(client, tenant, changed)
    assert second["outcome"]["tasks"] == {"unchanged": 3, "updated": 1}
    # data written since the migrations is not touched by their rollbacks
    extra = await client.post("/v1/memories", json={"content": "written later"}, headers=h)
    assert extra.status_code == 201
    r = await client.post(f"/v1/migrations/{second['id']}/rollback", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "rolled_back"
    now = await everything(client, tenant)
    assert now["tasks"] == after_first["tasks"]
    assert now["environments"] == after_first["environments"]
    r = await client.post(f"/v1/migrations/{first['id']}/rollback", headers=h)
    assert r.status_code == 200
    final = await everything(client, tenant)
    assert final["tasks"] == initial["tasks"] == []
    assert final["environments"] == initial["environments"]
    assert [m["content"] for m in final["memories"]] == ["written later"]
    assert_problem(await client.post(f"/v1/migrations/{first['id']}/rollback", headers=h), 409)
    # rolled back, the file migrates again from scratch
    third = await migrate(client, tenant, example())
    assert third["outcome"]["tasks"] == {"created": 4}


async def test_failed_migration_is_undone_whole(client: Any, tenant: dict[str, Any]) -> None:
    await migrate(client, tenant, example())
    before = await everything(client, tenant)
    # new tasks are written first; then a memory changed into a copy of another fails
    doc = edit_store(example(), "platform-tasks",
                     lambda s: s["state"]["tasks"].append({"id": "t-new", "title": "new"}))
    def copy_second_memory_into_first(store: dict[str, Any]) -> None:
        first, second = store["state"]["memories"][:2]
        # m-1 rewritten into an exact duplicate of m-2: same content, scope and metadata
        first.clear()
        first.update({**second, "id": "m-1"})

    edit_store(doc, "platform-memories", copy_second_memory_into_first)
    job = await migrate(client, tenant, doc)
    assert job["status"] == "failed" and "undone" in job["errors"][0]["reason"]
    assert await everything(client, tenant) == before
    assert_problem(
        await client.post(f"/v1/migrations/{job['id']}/rollback", headers=tenant["headers"]), 409
    )


@pytest.mark.parametrize("body", [[1, 2], {"platform-tasks": 5}, {"platform-tasks": "[1]"}])
async def test_bad_bodies(client: Any, tenant: dict[str, Any], body: Any) -> None:
    r = await client.post(URL, json=body, headers=tenant["headers"])
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code)
    assert await everything(client, tenant) == {"tasks": [], "environments": [], "memories": []}


async def test_malformed_json_and_isolation(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    r = await client.post(URL, content=b"{oops", headers={
        **tenant["headers"], "Content-Type": "application/json"})
    assert_problem(r, 400)
    job = await migrate(client, tenant, example())
    for call in (
        client.get(f"/v1/migrations/{job['id']}", headers=other_tenant["headers"]),
        client.post(f"/v1/migrations/{job['id']}/rollback", headers=other_tenant["headers"]),
        client.get("/v1/migrations/not-a-uuid", headers=tenant["headers"]),
    ):
        response = await call
        assert response.status_code in (404, 422)
        assert_problem(response, response.status_code)
    # the other tenant migrating the same file gets its own rows, not "unchanged"
    theirs = await migrate(client, other_tenant, example())
    assert theirs["outcome"]["tasks"] == {"created": 4}


async def test_a_job_left_running_is_undone_at_start(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    """A process that stopped mid-job leaves it 'running'; the next start undoes it."""
    before = await everything(client, tenant)
    job = await migrate(client, tenant, example())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE migration_jobs SET status = 'running' WHERE id = %s", (job["id"],))
    runtime = client.app.state.runtime
    await in_app_loop(client, runtime.migrations.recover)
    r = await client.get(f"/v1/migrations/{job['id']}", headers=tenant["headers"])
    assert r.json()["status"] == "failed" and "stopped" in r.json()["errors"][0]["reason"]
    assert await everything(client, tenant) == before
