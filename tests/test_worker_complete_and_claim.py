"""Completing an attempt and claiming the next in one request.

The completion and the claim share a transaction: the steps the completion made
ready are among those claimed, each output is still recorded once, and a claim
that is not valid refuses the whole request before anything is written.
"""

from __future__ import annotations

from typing import Any

from conftest import assert_problem
from workflow_helpers import DIAMOND, claim, compute, put_workflow, run_state, start


async def complete_and_claim(
    client: Any, headers: dict[str, str], attempt: dict[str, Any], output: Any, **next_claim: Any
) -> Any:
    return await client.post(
        f"/v1/workers/attempts/{attempt['id']}/complete",
        json={"lease_token": attempt["lease_token"], "output": output, "claim": next_claim},
        headers=headers,
    )


async def test_a_worker_runs_a_whole_diamond_with_one_request_a_step(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    queue = f"q{tenant['id'][:8]}"  # this test's own queue
    body = {"steps": [{**s, "queue": queue} for s in DIAMOND["steps"]]}
    run = await start(client, h, await put_workflow(client, h, body), {"n": 3})
    in_hand = await claim(client, h, [queue])
    order, requests = [], 0
    while in_hand:
        attempt = in_hand.pop(0)
        order.append(attempt["step_id"])
        r = await complete_and_claim(
            client, h, attempt, compute(attempt["input"]), queues=[queue], max_steps=5
        )
        requests += 1
        assert r.status_code == 200, r.text
        assert r.json()["id"] == attempt["id"] and r.json()["status"] == "completed"
        in_hand.extend(r.json()["claimed"])
    assert order[0] == "a" and sorted(order[1:3]) == ["b", "c"] and order[3:] == ["d", "e"]
    assert requests == 5  # the first claim, then one request per step
    finished = await run_state(client, h, run["id"])
    assert finished["status"] == "completed" and finished["output"] == {"e": {"value": 15}}
    assert all(s["attempts"] == 1 for s in finished["steps"])
    # a repeated completion is refused and claims nothing
    again = await complete_and_claim(client, h, attempt, {"value": 0}, queues=[queue])
    assert_problem(again, 409)


async def test_a_bad_claim_refuses_the_completion_too(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    queue = f"r{tenant['id'][:8]}"
    one = {"steps": [{"id": "only", "kind": "task", "queue": queue}]}
    run = await start(client, h, await put_workflow(client, h, one), {})
    [attempt] = await claim(client, h, [queue])
    for bad, field in (
        ({"queues": []}, "queues"),
        ({"queues": [queue], "max_steps": 0}, "max_steps"),
        ({"queues": [queue], "wait_s": 99}, "wait_s"),
        ({"queues": [queue], "surprise": 1}, "surprise"),
    ):
        r = await complete_and_claim(client, h, attempt, {"ok": True}, **bad)
        assert_problem(r, r.status_code, mentions=field)
        assert 400 <= r.status_code < 500
    still = await run_state(client, h, run["id"])
    assert still["status"] == "running" and still["steps"][0]["status"] == "running"
    # without a claim the answer is as it always was
    plain = await client.post(
        f"/v1/workers/attempts/{attempt['id']}/complete",
        json={"lease_token": attempt["lease_token"], "output": {"ok": True}},
        headers=h,
    )
    assert plain.status_code == 200 and plain.json() == {"id": attempt["id"], "status": "completed"}
