"""Bad input on the execution endpoints: a 4xx problem naming the problem, nothing written;
and another tenant's execution behaves exactly like a missing one on every endpoint."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import assert_problem
from tests.test_executions import append, new_execution, state_at

Client = AsyncTestClient[Litestar]


async def head_of(client: Client, h: dict[str, str], eid: str) -> int:
    r = await client.get(f"/v1/executions/{eid}", headers=h)
    return int(r.json()["head_seq"])


async def test_a_patch_that_does_not_apply_is_409_naming_the_operation(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    await append(client, h, eid, {"kind": "a", "state": {"x": 1}})
    batch = {
        "steps": [
            {"kind": "ok", "state_patch": [{"op": "replace", "path": "/x", "value": 2}]},
            {
                "kind": "bad",
                "state_patch": [
                    {"op": "add", "path": "/y", "value": 1},
                    {"op": "remove", "path": "/missing"},
                ],
            },
        ]
    }
    r = await client.post(f"/v1/executions/{eid}/steps", json=batch, headers=h)
    body = assert_problem(r, 409, mentions="steps[1].state_patch[1]")
    assert "remove" in body["detail"]
    failed_test = {"kind": "t", "state_patch": [{"op": "test", "path": "/x", "value": 99}]}
    assert_problem(
        await client.post(f"/v1/executions/{eid}/steps", json=failed_test, headers=h), 409,
        mentions="state_patch[0]",
    )
    assert await head_of(client, h, eid) == 1  # nothing of the batch was written
    assert (await state_at(client, h, eid, 1))["state"] == {"x": 1}


async def test_malformed_steps_are_rejected_before_anything_is_written(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    url = f"/v1/executions/{eid}/steps"
    cases: list[tuple[Any, int, str]] = [
        ({"kind": "a", "state_patch": [{"op": "explode", "path": "/x"}]}, 422, "state_patch[0]"),
        ({"kind": "a", "state_patch": [{"op": "add", "path": "/x"}]}, 422, "needs a value"),
        ({"kind": "a", "state_patch": [{"op": {}, "path": "", "from": ""}]}, 422, "state_patch[0]"),
        ({"kind": "a", "state_patch": [{"op": ["add"], "path": "/x", "value": 1}]}, 422, "state_patch[0]"),
        ({"kind": "a", "state": {}, "state_patch": []}, 422, "state_patch"),
        ({"kind": "a", "state": {"s": "nul\u0000"}}, 422, "NUL"),
        ({"kind": "a", "state_patch": [{"op": "add", "path": "/s", "value": "nul\u0000"}]}, 422, "NUL"),
        ({"kind": "a", "state_patch": [{"op": "add", "path": "/s\u0000", "value": 1}]}, 422, "NUL"),
        ({"kind": "a", "seq": 5}, 409, "seq"),
        ({"kind": "a", "started_at": "2026-01-02T00:00:00Z", "ended_at": "2026-01-01T00:00:00Z"}, 422, "started_at"),
        ({"kind": "a", "ended_at": "2026-01-01T00:00:00"}, 422, "time zone"),
        ({"kind": "9a"}, 422, "kind"),
        ({"name": "no kind"}, 422, "kind"),
        ({"kind": "a", "colour": "red"}, 400, "colour"),
        ({"steps": []}, 422, "steps"),
        ({"steps": [{"kind": "a"}], "kind": "b"}, 422, "not both"),
        ({"steps": [{"kind": "a"}] * 1001}, 413, "1000"),
        ({"kind": "a", "state": {"big": "x" * (1024 * 1024)}}, 413, "state"),
    ]
    for body, status, mention in cases:
        assert_problem(await client.post(url, json=body, headers=h), status, mentions=mention)
    assert await head_of(client, h, eid) == 0
    timeline = await client.get(url, headers=h)
    assert timeline.json()["items"] == []


async def test_bad_targets_for_rollback_fork_diff_and_replay(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    other = (await new_execution(client, h))["id"]
    await append(client, h, eid, [{"kind": "a", "state": {"v": i}} for i in range(3)])
    await append(client, h, other, {"kind": "a", "state": {}})
    await client.post(f"/v1/executions/{other}/checkpoints", json={"label": "theirs"}, headers=h)
    base = f"/v1/executions/{eid}"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("post", "/rollback", {"to": 9}, 422, "step 9"),
        ("post", "/rollback", {"to": "theirs"}, 422, "checkpoint"),  # another execution's label
        ("post", "/rollback", {"to": "2026-13-40T00:00:00Z"}, 422, "RFC 3339"),
        ("post", "/fork", {"at": 4}, 422, "step 4"),
        ("post", "/fork", {"at": "theirs"}, 422, "checkpoint"),
        ("post", "/fork", {"at": 1, "state_patch": [{"op": "remove", "path": "/nope"}]}, 409, "state_patch[0]"),
        ("post", "/fork", {"at": 1, "metadata": "x"}, 400, "metadata"),
    ]
    for method, path, body, status, mention in cases:
        r = await getattr(client, method)(base + path, json=body, headers=h)
        assert_problem(r, status, mentions=mention)
    assert await head_of(client, h, eid) == 3
    forks = await client.get("/v1/executions", params={"parent_id": eid}, headers=h)
    assert forks.json()["items"] == []

    unrelated = await client.get(f"{base}/diff", params={"from": 1, "from_execution": other}, headers=h)
    assert_problem(unrelated, 422, mentions="unrelated")
    assert_problem(await client.get(f"{base}/diff", params={"from": 7}, headers=h), 404, mentions="step 7")
    assert_problem(await client.get(f"{base}/diff", headers=h), 422, mentions="from")
    assert_problem(
        await client.get(f"{base}/replay", headers={**h, "Last-Event-ID": "x1"}), 422,
        mentions="Last-Event-ID",
    )
    assert_problem(await client.get(f"{base}/replay", params={"speed": -1}, headers=h), 400, mentions="speed")
    assert_problem(await client.get(f"{base}/replay", params={"to": 8}, headers=h), 422, mentions="step 8")
    assert_problem(await client.get(f"{base}/steps/9", headers=h), 404, mentions="step 9")
    assert_problem(await client.get(f"{base}/steps/1", params={"include": "soul"}, headers=h), 422, mentions="include")


async def test_bad_execution_fields(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"status": "paused"}, 400, "status"),
        ({"task_id": "not-a-uuid"}, 422, "task_id"),
        ({"task_id": str(uuid.uuid4())}, 422, "task_id"),
        ({"environment_id": str(uuid.uuid4())}, 422, "environment_id"),
        ({"metadata": [1]}, 400, "metadata"),
    ]
    for body, status, mention in cases:
        assert_problem(await client.post("/v1/executions", json=body, headers=h), status, mentions=mention)
    listed = await client.get("/v1/executions", headers=h)
    assert listed.json()["items"] == []
    eid = (await new_execution(client, h))["id"]
    assert_problem(await client.patch(f"/v1/executions/{eid}", json={}, headers=h), 422, mentions="nothing")
    assert_problem(await client.get("/v1/executions/not-an-id", headers=h), 422, mentions="execution_id")
    bad_cursor = await client.get("/v1/executions", params={"cursor": "abc.def"}, headers=h)
    assert_problem(bad_cursor, 422, mentions="cursor")


async def test_a_tiny_number_in_a_free_field_is_stored_as_sent(
    client: Client, tenant: dict[str, Any]
) -> None:
    """A step's input and output are free JSON, like metadata: any finite number is kept,
    whether it stands alone or inside an object. Only a typed ``real`` field refuses
    magnitudes below 1e-30."""
    h = tenant["headers"]
    eid = (await new_execution(client, h))["id"]
    await append(client, h, eid, {"kind": "a", "input": 5e-324, "output": {"x": -1e-31}, "state": 1e-40})
    step = await client.get(f"/v1/executions/{eid}/steps/1", params={"include": "state"}, headers=h)
    assert step.status_code == 200, step.text
    got = step.json()
    assert (got["input"], got["output"], got["state"]) == (5e-324, {"x": -1e-31}, 1e-40)
    refused = await client.post("/v1/memories/search", json={"query": "x", "min_score": 1e-31}, headers=h)
    assert_problem(refused, 422, mentions="min_score")


async def test_another_tenants_execution_is_missing_on_every_endpoint(
    client: Client, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h, intruder = tenant["headers"], other_tenant["headers"]
    eid = (await new_execution(client, h, agent_id="mine"))["id"]
    await append(client, h, eid, [{"kind": "a", "state": {"secret": i}} for i in range(2)])
    await client.post(f"/v1/executions/{eid}/checkpoints", json={"label": "cp"}, headers=h)
    own = (await new_execution(client, intruder))["id"]
    base = f"/v1/executions/{eid}"
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("get", base, {}),
        ("patch", base, {"json": {"status": "failed"}}),
        ("post", f"{base}/steps", {"json": {"kind": "x", "state": {}}}),
        ("get", f"{base}/steps", {}),
        ("get", f"{base}/steps/1", {"params": {"include": "state"}}),
        ("get", f"{base}/state", {"params": {"at": "1"}}),
        ("get", f"{base}/diff", {"params": {"from": "1", "to": "2"}}),
        ("get", f"/v1/executions/{own}/diff", {"params": {"from": "1", "from_execution": eid}}),
        ("post", f"{base}/checkpoints", {"json": {"label": "theirs"}}),
        ("get", f"{base}/checkpoints", {}),
        ("delete", f"{base}/checkpoints/cp", {}),
        ("post", f"{base}/rollback", {"json": {"to": 1}}),
        ("post", f"{base}/fork", {"json": {"at": 1}}),
        ("get", f"{base}/lineage", {}),
        ("get", f"{base}/replay", {"params": {"speed": "0"}}),
    ]
    for method, url, kwargs in requests:
        r = await getattr(client, method)(url, headers=intruder, **kwargs)
        assert_problem(r, 404, mentions="not found")
        assert "secret" not in r.text
    listed = await client.get("/v1/executions", headers=intruder)
    assert [e["id"] for e in listed.json()["items"]] == [own]
    # and nothing changed for the owner
    got = await client.get(base, headers=h)
    assert got.json()["head_seq"] == 2 and got.json()["status"] == "running"
    marks = await client.get(f"{base}/checkpoints", headers=h)
    assert [m["label"] for m in marks.json()["items"]] == ["cp"]
    forks = await client.get("/v1/executions", params={"parent_id": eid}, headers=h)
    assert forks.json()["items"] == []
