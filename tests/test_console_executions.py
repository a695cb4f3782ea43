"""The console's execution pages: timeline, state at a step, diff, checkpoints, rollback, fork."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from console_support import sign_in


@pytest.fixture
async def console(client: Any, tenant: dict[str, Any]) -> AsyncIterator[tuple[Any, str]]:
    token = await sign_in(client, tenant["api_key"])
    yield client, token
    client.cookies.clear()


async def recorded(client: Any, headers: dict[str, str]) -> str:
    execution = (await client.post("/v1/executions", json={"agent_id": "planner"}, headers=headers)).json()
    steps = [
        {"kind": "llm", "name": "plan", "state": {"plan": ["a", "b"], "done": []}},
        {"kind": "tool", "name": "search", "state": {"plan": ["a", "b"], "done": ["a"]}},
        {"kind": "tool", "name": "write", "error": {"message": "disk full"},
         "state": {"plan": ["b"], "done": ["a"], "note": "retry"}},
    ]
    r = await client.post(f"/v1/executions/{execution['id']}/steps", json={"steps": steps}, headers=headers)
    assert r.status_code == 201, r.text
    return str(execution["id"])


async def test_timeline_state_and_diff(console: tuple[Any, str], tenant: dict[str, Any]) -> None:
    client, _ = console
    eid = await recorded(client, tenant["headers"])
    listing = await client.get("/console/executions")
    assert eid[:8] in listing.text
    page = await client.get(f"/console/executions/{eid}")
    assert page.status_code == 200
    assert page.text.count('data-seq="') == 3 and "disk full" in page.text  # head: step 3
    assert re.search(r'id="state-seq">3<', page.text)
    first = await client.get(f"/console/executions/{eid}/state", params={"at": "1"}, headers={"HX-Request": "true"})
    assert re.search(r'id="state-seq">1<', first.text) and "&#34;done&#34;: []" in first.text
    diff = await client.get(f"/console/executions/{eid}", params={"diff_from": "1", "diff_to": "3"})
    assert 'class="op-add"' in diff.text and "/note" in diff.text
    assert 'class="op-remove"' in diff.text or 'class="op-replace"' in diff.text
    bad = await client.get(f"/console/executions/{eid}", params={"at": "minus"})
    assert bad.status_code == 422


async def test_checkpoint_rollback_and_fork(console: tuple[Any, str], tenant: dict[str, Any]) -> None:
    client, token = console
    h = tenant["headers"]
    eid = await recorded(client, h)
    base = f"/console/executions/{eid}"
    made = await client.post(f"{base}/checkpoints", data={"_csrf": token, "label": "planned", "seq": "1"})
    assert made.status_code == 200 and "planned" in made.text
    back = await client.post(f"{base}/rollback", data={"_csrf": token, "to": "1"}, follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"].endswith("?at=4")
    state = (await client.get(f"/v1/executions/{eid}/state", headers=h)).json()
    assert state["state"] == {"plan": ["a", "b"], "done": []}
    fork = await client.post(f"{base}/fork", data={"_csrf": token, "at": "2"}, follow_redirects=False)
    assert fork.status_code == 303
    forked = await client.get(fork.headers["location"])
    assert "fork of" in forked.text and eid[:8] in forked.text
    refused = await client.post(f"{base}/fork", data={"at": "2"})
    assert refused.status_code == 403
