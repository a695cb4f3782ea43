"""Time travel on the real database: diff, checkpoints, rollback, fork, lineage, replay."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import assert_problem
from tests.live_http import in_app_loop
from tests.test_executions import append, new_execution, state_at

Client = AsyncTestClient[Litestar]


async def counter_execution(client: Client, h: dict[str, str], steps: int) -> str:
    """An execution whose state after step n is {"n": n, "log": [1..n]} plus a fixed part."""
    eid = (await new_execution(client, h))["id"]
    await append(client, h, eid, {"kind": "start", "state": {"n": 1, "log": [1], "fixed": "x"}})
    batch = [
        {
            "kind": "tool",
            "state_patch": [
                {"op": "replace", "path": "/n", "value": n},
                {"op": "add", "path": "/log/-", "value": n},
            ],
        }
        for n in range(2, steps + 1)
    ]
    if batch:
        await append(client, h, eid, {"steps": batch})
    return eid


def expected(n: int) -> dict[str, Any]:
    return {"n": n, "log": list(range(1, n + 1)), "fixed": "x"}


async def test_diff_between_steps_names_added_removed_and_changed_paths(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    await append(client, h, eid, {"kind": "a", "state": {"keep": 1, "gone": 2, "edit": "old"}})
    await append(client, h, eid, {"kind": "b", "state": {"keep": 1, "edit": "new", "fresh": [1]}})
    r = await client.get(f"/v1/executions/{eid}/diff", params={"from": 1, "to": 2}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["from"] == {"execution_id": eid, "seq": 1} and body["to"]["seq"] == 2
    assert body["summary"] == {"added": ["/fresh"], "removed": ["/gone"], "changed": ["/edit"]}
    import jsonpatch

    assert jsonpatch.apply_patch({"keep": 1, "gone": 2, "edit": "old"}, body["patch"]) == {
        "keep": 1,
        "edit": "new",
        "fresh": [1],
    }
    same = await client.get(f"/v1/executions/{eid}/diff", params={"from": 2}, headers=h)
    assert same.json()["patch"] == [] and same.json()["to"]["seq"] == 2


async def test_rollback_appends_a_step_with_the_target_state(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = await counter_execution(client, h, 8)
    await client.post(f"/v1/executions/{eid}/checkpoints", json={"label": "good", "seq": 3}, headers=h)
    r = await client.post(f"/v1/executions/{eid}/rollback", json={"to": "good"}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 9 and r.json()["kind"] == "rollback"
    assert (await state_at(client, h, eid, 9))["state"] == expected(3)
    # history is kept: the steps before the rollback still hold their states
    assert (await state_at(client, h, eid, 8))["state"] == expected(8)
    again = await client.post(f"/v1/executions/{eid}/rollback", json={"to": 8}, headers=h)
    assert again.json()["seq"] == 10
    assert (await state_at(client, h, eid, 10))["state"] == expected(8)
    step = await client.get(f"/v1/executions/{eid}/steps/9", headers=h)
    assert step.json()["input"] == {"to": 3, "label": "good"}


async def test_fork_shares_history_by_reference_and_never_changes_its_parent(
    client: Client, tenant: dict[str, Any], database_url: str
) -> None:
    h = tenant["headers"]
    parent = await counter_execution(client, h, 30)
    await client.post(f"/v1/executions/{parent}/checkpoints", json={"label": "early", "seq": 5}, headers=h)
    await client.post(f"/v1/executions/{parent}/checkpoints", json={"label": "late", "seq": 25}, headers=h)
    r = await client.post(
        f"/v1/executions/{parent}/fork",
        json={"at": 20, "state_patch": [{"op": "replace", "path": "/fixed", "value": "y"}],
              "metadata": {"why": "what if"}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    fork = r.json()
    assert fork["parent_id"] == parent and fork["fork_seq"] == 20 and fork["head_seq"] == 21
    assert fork["metadata"] == {"why": "what if"}
    with psycopg.connect(database_url) as conn:
        own = conn.execute(
            "SELECT seq FROM execution_steps WHERE execution_id = %s ORDER BY seq", (fork["id"],)
        ).fetchall()
    assert own == [(21,)]  # the fork step only: nothing copied from the parent
    assert (await state_at(client, h, fork["id"], 20))["state"] == expected(20)
    assert (await state_at(client, h, fork["id"], 21))["state"] == {**expected(20), "fixed": "y"}
    await append(client, h, fork["id"], {"kind": "tool", "state_patch": [{"op": "replace", "path": "/n", "value": -1}]})

    # the parent did not change
    assert (await state_at(client, h, parent, 21))["state"] == expected(21)
    parent_head = await client.get(f"/v1/executions/{parent}", headers=h)
    assert parent_head.json()["head_seq"] == 30

    timeline = await client.get(f"/v1/executions/{fork['id']}/steps", params={"limit": 1000}, headers=h)
    owners = [(s["seq"], s["execution_id"]) for s in timeline.json()["items"]]
    assert owners[:20] == [(i, parent) for i in range(1, 21)]
    assert owners[20:] == [(21, fork["id"]), (22, fork["id"])]

    # the parent's labels up to the fork point are visible from the fork
    marks = await client.get(f"/v1/executions/{fork['id']}/checkpoints", headers=h)
    assert [m["label"] for m in marks.json()["items"]] == ["early"]
    assert (await state_at(client, h, fork["id"], "early"))["state"] == expected(5)

    # diff fork vs parent at their heads
    d = await client.get(
        f"/v1/executions/{fork['id']}/diff",
        params={"from": 30, "from_execution": parent},
        headers=h,
    )
    assert d.status_code == 200, d.text
    assert d.json()["from"] == {"execution_id": parent, "seq": 30}
    assert d.json()["to"] == {"execution_id": fork["id"], "seq": 22}
    assert "/fixed" in d.json()["summary"]["changed"] and "/n" in d.json()["summary"]["changed"]

    lineage = await client.get(f"/v1/executions/{fork['id']}/lineage", headers=h)
    assert [a["id"] for a in lineage.json()["ancestors"]] == [parent]
    assert lineage.json()["ancestors"][0]["fork_seq"] == 20
    down = await client.get(f"/v1/executions/{parent}/lineage", headers=h)
    assert [f["id"] for f in down.json()["forks"]] == [fork["id"]]

    # a fork of the fork, inside the part it inherited, still resolves to the root's rows
    grand = await client.post(f"/v1/executions/{fork['id']}/fork", json={"at": 10}, headers=h)
    assert grand.status_code == 201, grand.text
    assert (await state_at(client, h, grand.json()["id"], 10))["state"] == expected(10)
    chain = await client.get(f"/v1/executions/{grand.json()['id']}/lineage", headers=h)
    assert [a["id"] for a in chain.json()["ancestors"]] == [parent, fork["id"]]


async def test_checkpoints_create_list_delete(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    eid = await counter_execution(client, h, 4)
    url = f"/v1/executions/{eid}/checkpoints"
    head = await client.post(url, json={"label": "head", "note": "last good"}, headers=h)
    assert head.status_code == 201 and head.json()["seq"] == 4 and head.json()["note"] == "last good"
    await client.post(url, json={"label": "two", "seq": 2}, headers=h)
    listed = await client.get(url, headers=h)
    assert [(m["label"], m["seq"]) for m in listed.json()["items"]] == [("two", 2), ("head", 4)]
    assert_problem(await client.post(url, json={"label": "two", "seq": 1}, headers=h), 409, mentions="two")
    assert_problem(await client.post(url, json={"label": "9lives"}, headers=h), 422, mentions="label")
    assert_problem(await client.post(url, json={"label": "far", "seq": 5}, headers=h), 422, mentions="seq")
    gone = await client.delete(f"{url}/two", headers=h)
    assert gone.status_code == 204
    assert_problem(await client.delete(f"{url}/two", headers=h), 404, mentions="two")
    assert [m["label"] for m in (await client.get(url, headers=h)).json()["items"]] == ["head"]


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            event[key] = value.strip()
        if "data" in event:
            event["data"] = json.loads(event["data"])
            events.append(event)
    return events


async def test_replay_sends_steps_in_order_with_patches_and_resumes(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = await counter_execution(client, h, 60)  # crosses a keyframe
    url = f"/v1/executions/{eid}/replay"
    r = await client.get(url, params={"speed": 0}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[0]["event"] == "state" and events[0]["data"]["seq"] == 0
    steps = [e for e in events if e.get("event") == "step"]
    assert [int(e["id"]) for e in steps] == list(range(1, 61))
    assert events[-1]["event"] == "end"
    # applying the patches in order rebuilds every state
    import jsonpatch

    state = events[0]["data"]["state"]
    for e in steps:
        state = jsonpatch.apply_patch(state, e["data"]["state_patch"])
        assert state == expected(e["data"]["seq"])

    resumed = parse_sse(
        (await client.get(url, params={"speed": 0, "to": 45}, headers={**h, "Last-Event-ID": "40"})).text
    )
    assert resumed[0]["data"]["seq"] == 40 and resumed[0]["data"]["state"] == expected(40)
    assert [int(e["id"]) for e in resumed if e.get("event") == "step"] == [41, 42, 43, 44, 45]


async def test_replay_is_paced_by_recorded_gaps_times_speed(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    ends = ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00.400Z", "2026-01-01T10:00:01.200Z"]
    await append(client, h, eid, [{"kind": "s", "ended_at": t, "started_at": t} for t in ends])
    started = time.monotonic()
    r = await client.get(f"/v1/executions/{eid}/replay", params={"speed": 0.5}, headers=h)
    elapsed = time.monotonic() - started
    waits = [e["data"]["wait_ms"] for e in parse_sse(r.text) if e.get("event") == "step"]
    assert waits == [0.0, 200.0, 400.0]
    assert elapsed >= 0.6


async def test_every_step_goes_to_the_event_log_without_state(
    client: Client, tenant: dict[str, Any], app: Litestar
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h, agent_id="a1"))["id"]
    await append(client, h, eid, [{"kind": "llm", "name": "plan", "state": {"secret": "s3"}},
                                  {"kind": "tool", "name": "search", "error": {"m": "x"}}])
    assert await in_app_loop(client, app.state.runtime.event_writer.flush)
    r = await client.get("/v1/events", params={"execution_id": eid}, headers=h)
    events = r.json()["items"]
    assert [(e["type"], e["attributes"]["seq"], e["attributes"]["kind"]) for e in events] == [
        ("execution.step", 1, "llm"),
        ("execution.step", 2, "tool"),
    ]
    assert events[0]["agent_id"] == "a1" and events[1]["severity"] == "warn"
    assert events[0]["duration_ms"] == 0.0
    assert "s3" not in r.text
