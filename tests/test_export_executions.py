"""Executions in an export: steps, patches, checkpoints and forks survive a round trip."""

from __future__ import annotations

import json
from typing import Any

from conftest import new_tenant
from test_export_import import do_import, export, ndjson


async def timeline(client: Any, h: dict[str, str], eid: str) -> list[Any]:
    out = []
    execution = (await client.get(f"/v1/executions/{eid}", headers=h)).json()
    for seq in range(1, execution["head_seq"] + 1):
        r = await client.get(f"/v1/executions/{eid}/state", params={"at": seq}, headers=h)
        assert r.status_code == 200, r.text
        out.append(r.json()["state"])
    checkpoints = await client.get(f"/v1/executions/{eid}/checkpoints", headers=h)
    labels = sorted((c["label"], c["seq"]) for c in checkpoints.json()["items"])
    keep = ("status", "agent_id", "metadata", "head_seq", "fork_seq", "version", "created_at")
    return [{k: execution[k] for k in keep}, out, labels]


async def test_executions_round_trip(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    task = (await client.post("/v1/tasks", json={"title": "plan a trip"}, headers=h)).json()
    root = (await client.post("/v1/executions", json={
        "task_id": task["id"], "agent_id": "planner", "metadata": {"m": 1}}, headers=h)).json()
    steps = [{"kind": "llm", "state": {"n": 0, "notes": []}}] + [
        {"kind": "tool", "state_patch": [{"op": "replace", "path": "/n", "value": i},
                                         {"op": "add", "path": "/notes/-", "value": f"s{i}"}]}
        for i in range(1, 70)
    ]
    r = await client.post(f"/v1/executions/{root['id']}/steps", json={"steps": steps}, headers=h)
    assert r.status_code == 201, r.text
    mark = await client.post(f"/v1/executions/{root['id']}/checkpoints",
                             json={"label": "half", "seq": 35}, headers=h)
    assert mark.status_code == 201, mark.text
    fork = await client.post(f"/v1/executions/{root['id']}/fork", json={"at": 20}, headers=h)
    assert fork.status_code == 201, fork.text
    more = [{"kind": "tool", "state_patch": [{"op": "replace", "path": "/n", "value": -1}]}]
    r = await client.post(f"/v1/executions/{fork.json()['id']}/steps", json={"steps": more},
                          headers=h)
    assert r.status_code == 201, r.text
    await client.post("/v1/events", json={"items": [
        {"type": "step.done", "execution_id": root["id"]}]}, headers=h)

    lines = await export(client, tenant, types="tasks,executions,events")
    assert [x["type"] for x in lines[1:-1]][:3] == ["task", "execution", "execution"]
    assert lines[-1]["counts"]["execution"] == 2
    copy = await new_tenant(client)
    r = await do_import(client, copy, ndjson(lines))
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["execution"] == {"created": 2}
    listed = (await client.get("/v1/executions", headers=copy["headers"])).json()["items"]
    new_root = next(e for e in listed if e["parent_id"] is None)
    new_fork = next(e for e in listed if e["parent_id"] is not None)
    assert new_fork["parent_id"] == new_root["id"] != root["id"]
    new_task = (await client.get("/v1/tasks", headers=copy["headers"])).json()["items"][0]
    assert new_root["task_id"] == new_task["id"]
    assert await timeline(client, copy["headers"], new_root["id"]) == await timeline(
        client, h, root["id"])
    assert await timeline(client, copy["headers"], new_fork["id"]) == await timeline(
        client, h, fork.json()["id"])
    events = await client.get("/v1/events", params={"type": "step"}, headers=copy["headers"])
    assert [e["execution_id"] for e in events.json()["items"]] == [new_root["id"]]
    # a fork whose parent is missing from the stream is refused, and nothing is written
    alone = [lines[0], *[x for x in lines if x.get("parent_id")],
             {"type": "end", "counts": {"execution": 1}}]
    empty = await new_tenant(client)
    r = await do_import(client, empty, ndjson(alone))
    assert r.status_code == 422 and "parent" in json.dumps(r.json())
