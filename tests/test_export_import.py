"""Export and import of a tenant over the real app, database and model.

The round trip is the proof: a tenant exported and imported into a new tenant
has the same entities, the same versions and history of content, and answers a
fixed query set with the identical ranking. Bad streams (truncated, unknown
type or format version, conflicts under ``on_conflict=fail``) write nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from conftest import ADMIN_TOKEN, assert_problem, new_tenant
from helpers import unit_vectors

from memory_service.transfer.lines import decode_embedding, encode_embedding

QUERIES = ["what does Ana like to eat?", "where is the cluster?", "pricing of rivals",
           "weekend plans", "which language do we write tests in?"]
CONTENTS = [
    "Ana is vegetarian and loves spicy Thai food.",
    "The staging cluster runs in eu-west-1.",
    "Competitor prices change on the first of each month.",
    "Ben goes hiking in the Alps most weekends.",
    "Our test suite is written in Python with pytest.",
    "The office coffee machine is broken again.",
    "Deployments happen on Tuesdays after the stand-up.",
]


async def seed(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    env = await client.post("/v1/environments", json={
        "name": "prod", "config": {"region": "eu"}, "secrets": {"TOKEN": "t0ps3cret"}}, headers=h)
    assert env.status_code == 201, env.text
    task = await client.post("/v1/tasks", json={
        "title": "ship it", "environment_id": env.json()["id"], "tags": ["a"]}, headers=h)
    assert task.status_code == 201
    moved = await client.patch(f"/v1/tasks/{task.json()['id']}", json={"status": "in_progress"},
                               headers=h)
    assert moved.json()["version"] == 2
    items = [{"content": c, "user_id": "ana" if i % 2 else None, "metadata": {"i": i}}
             for i, c in enumerate(CONTENTS)]
    added = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert added.status_code == 201, added.text
    first = added.json()["items"][0]["id"]
    patched = await client.patch(f"/v1/memories/{first}", json={
        "content": "Ana is vegan and loves spicy Thai food."}, headers=h)
    assert patched.json()["version"] == 2
    event = await client.post("/v1/events", json={"items": [
        {"type": "tool.call", "task_id": task.json()["id"], "attributes": {"n": 1}}]}, headers=h)
    assert event.status_code in (200, 201), event.text


async def export(client: Any, tenant: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/export", params=params, headers=tenant["headers"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


async def do_import(client: Any, tenant: dict[str, Any], body: bytes, **params: Any) -> Any:
    return await client.post("/v1/import", params=params, content=body,
                             headers={**tenant["headers"], "Content-Type": "application/x-ndjson"})


async def state(client: Any, tenant: dict[str, Any]) -> dict[str, Any]:
    h = tenant["headers"]
    out: dict[str, Any] = {}
    for what in ("tasks", "environments", "memories"):
        r = await client.get(f"/v1/{what}", params={"limit": 1000}, headers=h)
        out[what] = r.json()["items"]
    out["history"] = {}
    for m in out["memories"]:
        r = await client.get(f"/v1/memories/{m['id']}/history", headers=h)
        out["history"][m["content"]] = [{k: v for k, v in e.items()} for e in r.json()["items"]]
    return out


def without_ids(rows: list[dict[str, Any]], *drop: str) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in r.items() if k not in ("id", *drop)} for r in rows),
        key=lambda r: json.dumps(r, sort_keys=True),
    )


async def ranking(client: Any, tenant: dict[str, Any]) -> list[list[tuple[str, float]]]:
    out = []
    for q in QUERIES:
        r = await client.post("/v1/memories/search", json={"query": q, "k": 5},
                              headers=tenant["headers"])
        out.append([(x["memory"]["content"], round(x["score"], 6)) for x in r.json()["results"]])
    return out


async def test_round_trip_into_a_new_tenant(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    lines = await export(client, tenant, types="environments,tasks,memories,events",
                         include_history="true")
    header, end = lines[0], lines[-1]
    assert header["type"] == "header" and header["format_version"] == 1
    assert header["model"] == {"name": "all-MiniLM-L6-v2", "dimension": 384}
    assert end == {"type": "end", "counts": {"environment": 1, "task": 1, "memory": 7,
                                             "event": end["counts"]["event"]}}
    assert "t0ps3cret" not in json.dumps(lines)
    assert [x["secret_names"] for x in lines if x["type"] == "environment"] == [["TOKEN"]]
    copy = await new_tenant(client)
    source_before = await state(client, tenant)
    r = await do_import(client, copy, ndjson(lines))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["re_embedded"] is False
    assert report["counts"]["memory"] == {"created": 7}
    before, after = await state(client, tenant), await state(client, copy)
    assert before == source_before  # the source tenant is untouched
    assert without_ids(after["memories"]) == without_ids(before["memories"])
    assert after["history"] == before["history"]  # the same versions of content
    assert len(after["history"]["Ana is vegan and loves spicy Thai food."]) == 2
    assert without_ids(after["tasks"], "environment_id") == without_ids(
        before["tasks"], "environment_id")
    assert after["tasks"][0]["environment_id"] == after["environments"][0]["id"]
    assert without_ids(after["environments"]) == without_ids(before["environments"])
    # the other tenant's ids were taken, so the copy has its own ids
    assert {m["id"] for m in after["memories"]}.isdisjoint(m["id"] for m in before["memories"])
    assert await ranking(client, copy) == await ranking(client, tenant)
    events = await client.get("/v1/events", params={"type": "tool"}, headers=copy["headers"])
    assert [e["task_id"] for e in events.json()["items"]] == [after["tasks"][0]["id"]]


async def test_reimport_conflicts_and_dry_run(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    body = ndjson(await export(client, tenant))
    before = await state(client, tenant)
    skipped = await do_import(client, tenant, body)
    assert skipped.json()["counts"]["memory"] == {"skipped": 7}
    failed = await do_import(client, tenant, body, on_conflict="fail")
    assert_problem(failed, 409, mentions="already exists")
    over = await do_import(client, tenant, body, on_conflict="overwrite")
    assert over.json()["counts"]["task"] == {"overwritten": 1}
    assert await state(client, tenant) == before
    fresh = await new_tenant(client)
    dry = await do_import(client, fresh, body, dry_run="true")
    assert dry.status_code == 200 and dry.json()["counts"]["memory"] == {"created": 7}
    assert (await state(client, fresh))["memories"] == []
    # a second import into another tenant meets the first copy: nothing twice
    assert (await do_import(client, fresh, body)).json()["counts"]["task"] == {"created": 1}
    once = await state(client, fresh)
    again = await do_import(client, fresh, body)
    assert again.json()["counts"] == {
        "environment": {"skipped": 1}, "task": {"skipped": 1}, "memory": {"skipped": 7}
    }
    assert await state(client, fresh) == once


async def test_importing_events_twice_adds_them_once(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    lines = await export(client, tenant, types="events")
    exported = [x for x in lines if x["type"] == "event"]
    assert exported and all(x["id"] for x in exported)
    body = ndjson(lines)
    n = len(exported)
    # into the tenant it came from: every event is already there
    home = await do_import(client, tenant, body)
    assert home.json()["counts"]["event"] == {"skipped": n}, home.text
    copy = await new_tenant(client)
    first = await do_import(client, copy, body)
    assert first.json()["counts"]["event"] == {"created": n}, first.text
    for policy in ("skip", "overwrite"):
        again = await do_import(client, copy, body, on_conflict=policy)
        assert again.json()["counts"]["event"] == {"skipped": n}, again.text
    failed = await do_import(client, copy, body, on_conflict="fail")
    assert_problem(failed, 409, mentions="already exists")
    r = await client.get("/v1/events", params={"type": "tool", "limit": 1000}, headers=copy["headers"])
    assert len(r.json()["items"]) == 1
    ids = [x["id"] for x in exported]
    r = await client.get("/v1/events", params={"limit": 1000}, headers=copy["headers"])
    assert sorted(e["id"] for e in r.json()["items"] if e["id"] in ids) == sorted(ids)


async def test_embeddings_carried_or_recomputed(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    lines = await export(client, tenant, types="memories")
    planted = unit_vectors(len(lines) - 2, seed=3)
    for line, vector in zip(lines[1:-1], planted, strict=True):
        line["embedding"] = encode_embedding(vector)
    carried = await new_tenant(client)
    assert (await do_import(client, carried, ndjson(lines))).status_code == 200
    lines[0]["model"]["name"] = "another-model"
    redone = await new_tenant(client)
    r = await do_import(client, redone, ndjson(lines))
    assert r.json()["re_embedded"] is True and r.json()["counts"]["memory"]["re_embedded"] == 7

    async def vectors(t: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for m in (await state(client, t))["memories"]:
            got = await client.get(f"/v1/memories/{m['id']}", params={"include": "embedding"},
                                   headers=t["headers"])
            out[m["content"]] = np.asarray(got.json()["embedding"], dtype=np.float32)
        return out

    original, kept, recomputed = (await vectors(tenant), await vectors(carried),
                                  await vectors(redone))
    by_content = {line["content"]: decode_embedding(line["embedding"], 384) for line in lines[1:-1]}
    for content, vector in original.items():
        assert np.allclose(kept[content], by_content[content], atol=1e-6)
        # the same model again; not to the bit, since its int8 activations are quantised
        # with a range taken over the whole batch, and the batches differ
        assert float(recomputed[content] @ vector) > 0.99, content
    for _ in range(100):  # the event writer lingers a moment before it writes
        progress = await client.get("/v1/events", params={"type": "import.progress"},
                                    headers=redone["headers"])
        if progress.json()["items"]:
            break
        await asyncio.sleep(0.05)
    assert progress.json()["items"][-1]["attributes"]["re_embedded"] is True


async def test_bad_streams_write_nothing(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    lines = await export(client, tenant, types="environments,tasks,memories")
    body = ndjson(lines)
    target = await new_tenant(client)
    cases = {
        "truncated": body[: len(body) - len(json.dumps(lines[-1])) - 1],
        "cut mid-line": body[: len(body) // 2],
        "unknown type": ndjson([*lines[:-1], {"type": "spaceship", "id": "x"}, lines[-1]]),
        "format version": ndjson([{**lines[0], "format_version": 99}, *lines[1:]]),
        "no header": ndjson(lines[1:]),
        "wrong counts": ndjson([*lines[:-1], {"type": "end", "counts": {"memory": 99}}]),
        "after end": body + ndjson([lines[1]]),
        "bad embedding": ndjson([*lines[:3], {**lines[3], "embedding": "AAAA"}, *lines[4:]]),
        "not json": b"{this is not json\n",
    }
    for name, payload in cases.items():
        r = await do_import(client, target, payload)
        problem = assert_problem(r, 422)
        assert "line" in problem["detail"] or "end line" in problem["detail"], (name, problem)
    empty = await state(client, target)
    assert empty["memories"] == empty["tasks"] == empty["environments"] == []
    assert_problem(await do_import(client, target, body, on_conflict="maybe"), 400)


async def test_secret_values_need_the_admin_token(client: Any, tenant: dict[str, Any]) -> None:
    await seed(client, tenant)
    params = {"types": "environments", "include_secret_values": "true"}
    r = await client.get("/v1/export", params=params, headers=tenant["headers"])
    assert_problem(r, 403)
    r = await client.get("/v1/export", params=params,
                         headers={**tenant["headers"], "X-Admin-Token": "wrong"})
    assert_problem(r, 403)
    r = await client.get("/v1/export", params=params,
                         headers={**tenant["headers"], "X-Admin-Token": ADMIN_TOKEN})
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines[1]["secrets"] == {"TOKEN": "t0ps3cret"}
    assert_problem(await client.get("/v1/export", params={"types": "nope"},
                                    headers=tenant["headers"]), 422)


async def test_export_is_confined_to_the_tenant(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    await seed(client, tenant)
    lines = await export(client, other_tenant, types="environments,tasks,memories,events")
    assert lines[-1]["counts"] == {"environment": 0, "task": 0, "memory": 0, "event": 0}
    assert len(lines) == 2
    r = await client.get("/v1/export", headers={"Authorization": "Bearer nope"})
    assert_problem(r, 401)
