"""A step made ready wakes one waiting claimer of its queue, not every claimer.

Each woken claimer runs a claim; with eight workers waiting, waking all of them
for one step cost seven empty claims on the path of the one that got it. The
commit wakes as many claimers of the step's tenant and queue as it made ready,
the longest waiting first; a claimer that leaves with such a wake unused hands it
on; the process skips its own notification when it comes back.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from live_http import in_app_loop
from test_supervision import runtime_of
from workflow_helpers import put_workflow, start

from memory_service.events.fanout import EventFanout
from memory_service.infra.supervisor import Supervisor
from memory_service.workflows.transition import ORIGIN, queue_topic, read_payload


def fanout() -> EventFanout:
    return EventFanout("postgresql://unused", supervisor=Supervisor(), name="test", parse=read_payload)


def test_a_counted_wake_takes_the_longest_waiting_not_yet_woken() -> None:
    f = fanout()
    first, second, third = (f.subscribe("t/q") for _ in range(3))
    assert f.wake("t/q", limit=1) == 1
    assert (first.woken, second.woken, third.woken) == (True, False, False)
    assert f.wake("t/q", limit=1) == 1  # the woken one is not woken again: the next is
    assert (second.woken, third.woken) == (True, False)
    assert f.wake("t/q", limit=5) == 1  # no more than there are
    assert f.wake("t/q") == 3  # no count: all of them
    assert f.wake("other/q", limit=1) == 0


def test_an_unused_wake_passes_to_the_next_claimer() -> None:
    f = fanout()
    leaving, staying = f.subscribe("t/a", "t/b"), f.subscribe("t/b")
    f.wake("t/b", limit=1)
    assert leaving.woken and not staying.woken
    leaving.close()  # gone before claiming: the wake goes on
    assert staying.woken
    used, later = f.subscribe("t/c"), f.subscribe("t/c")
    f.wake("t/c", limit=1)
    assert used.woken and not later.woken
    used.clear()  # it claimed: the wake was used
    used.close()
    assert not later.woken


def test_payloads_name_tenant_queue_and_count_and_skip_this_process() -> None:
    tenant = uuid.uuid4()
    assert read_payload(f"{tenant} default 3 elsewhere") == (queue_topic(tenant, "default"), 3)
    assert read_payload(f"{tenant} default 3 {ORIGIN}") is None
    assert read_payload("driver") == ("driver", None)
    assert read_payload(f"{tenant} default many elsewhere") is None


async def test_one_ready_step_wakes_one_of_four_waiting_claims(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    queue = f"q{tenant['id'][:8]}"
    name = await put_workflow(client, h, {"steps": [{"id": "a", "kind": "task", "queue": queue}]})
    workflows = runtime_of(client).workflows
    me = uuid.UUID(tenant["id"])
    waiting: list[asyncio.Task[list[Any]]] = []

    async def wait_in_four() -> int:
        for i in range(4):
            waiting.append(
                asyncio.create_task(workflows.workers.claim(me, f"w{i}", [queue], wait_s=5.0))
            )
        topic = queue_topic(me, queue)
        while len(workflows.wakeups._subscribers.get(topic, ())) < 4:
            await asyncio.sleep(0.01)
        return workflows.wakeups.woken

    async def answers() -> tuple[int, list[int], int]:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED, timeout=3)
        await asyncio.sleep(0.3)  # the notification's round trip: skipped, it is this process's
        woken = workflows.wakeups.woken
        still = sum(not t.done() for t in waiting)
        for t in waiting:
            t.cancel()
        return woken, [len(t.result()) for t in done], still

    before = await in_app_loop(client, wait_in_four)
    await start(client, h, name, {})
    woken, claimed, still_waiting = await in_app_loop(client, answers)
    assert claimed == [1]  # one claim got the step at once
    assert woken - before == 1  # and only it was woken
    assert still_waiting == 3
