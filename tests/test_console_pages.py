"""Console pages over real HTTP: board paging and moves, environments, memories, health, tail.

These check what each page does with the core services (paging, status
conflicts, stale versions, explain, history, the SSE resume) without a browser;
the browser tests check the same pages in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from console_support import sign_in
from live_http import SSEReader, serve

from memory_service.config import Settings

CARD = re.compile(r'<li class="card[^"]*" id="task-([0-9a-f-]+)"')
MORE = re.compile(r'hx-get="([^"]+)"')


@pytest.fixture
async def console(client: Any, tenant: dict[str, Any]) -> AsyncIterator[tuple[Any, str]]:
    token = await sign_in(client, tenant["api_key"])
    yield client, token
    client.cookies.clear()


async def test_board_filters_and_pages_every_column_by_cursor(
    console: tuple[Any, str], tenant: dict[str, Any]
) -> None:
    client, _ = console
    tasks = [{"title": f"low {i}", "priority": "low"} for i in range(23)]
    ids = set()
    for body in [*tasks, {"title": "urgent one", "priority": "urgent"}]:
        r = await client.post("/v1/tasks", json=body, headers=tenant["headers"])
        if body["priority"] == "low":
            ids.add(r.json()["id"])
    board = await client.get("/console/tasks", params={"priority": "low", "sort": "title"})
    assert board.status_code == 200
    assert "urgent one" not in board.text
    seen = CARD.findall(board.text)
    assert len(seen) == 20
    more = MORE.search(board.text)
    assert more
    rest = await client.get(more[1].replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert rest.status_code == 200 and "<html" not in rest.text
    seen += CARD.findall(rest.text)
    assert MORE.search(rest.text) is None
    assert len(seen) == len(set(seen)) == 23 and set(seen) == ids
    plain = await client.get(more[1].replace("&amp;", "&"))
    assert "<html" in plain.text and len(CARD.findall(plain.text)) == 3  # works without htmx


async def test_moves_answer_409_and_412_with_the_reason(
    console: tuple[Any, str], tenant: dict[str, Any]
) -> None:
    client, token = console
    h = tenant["headers"]
    done = (await client.post("/v1/tasks", json={"title": "d", "status": "completed"}, headers=h)).json()
    todo = (await client.post("/v1/tasks", json={"title": "t"}, headers=h)).json()
    htmx = {"HX-Request": "true"}

    async def move(task: dict[str, Any], status: str, version: int) -> httpx.Response:
        data = {"_csrf": token, "status": status, "from": task["status"], "version": str(version)}
        return await client.post(f"/console/tasks/{task['id']}/status", data=data, headers=htmx)

    refused = await move(done, "in_progress", 1)
    assert refused.status_code == 409 and "completed" in refused.text
    stale = await move(todo, "in_progress", 7)
    assert stale.status_code == 412 and "changed meanwhile" in stale.text
    assert stale.text.lstrip().startswith("<li") and 'data-status="pending"' in stale.text
    moved = await move(todo, "in_progress", 1)
    assert moved.status_code == 200 and 'data-status="in_progress"' in moved.text and "v2" in moved.text
    reopened = await move(done, "pending", 1)
    assert reopened.status_code == 200 and 'data-status="pending"' in reopened.text


async def test_environment_edit_merges_secrets_and_refuses_a_stale_version(
    console: tuple[Any, str], tenant: dict[str, Any]
) -> None:
    client, token = console
    env = (
        await client.post(
            "/v1/environments",
            json={"name": "e1", "secrets": {"A": "1", "B": "2"}},
            headers=tenant["headers"],
        )
    ).json()
    path = f"/console/environments/{env['id']}"
    saved = await client.post(
        path,
        data={
            "_csrf": token,
            "version": "1",
            "description": "edited",
            "config": '{"x": 1}',
            "is_active": "on",
            "remove_secret": "A",
            "secret_name": "C",
            "secret_value": "3",
        },
    )
    assert saved.status_code == 200
    after = (await client.get(f"/v1/environments/{env['id']}", headers=tenant["headers"])).json()
    assert after["secrets"] == ["B", "C"] and after["config"] == {"x": 1}
    assert after["description"] == "edited" and after["version"] == 2
    stale = await client.post(path, data={"_csrf": token, "version": "1", "config": "{}"})
    assert stale.status_code == 412
    bad = await client.post(path, data={"_csrf": token, "version": "2", "config": "[1]"})
    assert bad.status_code == 422 and "config" in bad.text


async def test_memory_explorer_searches_explains_and_shows_history(
    console: tuple[Any, str], tenant: dict[str, Any]
) -> None:
    client, _ = console
    h = tenant["headers"]
    tea = (
        await client.post(
            "/v1/memories",
            json={"content": "Ada drinks green tea", "user_id": "ada", "metadata": {"k": "drink"}},
            headers=h,
        )
    ).json()
    await client.post("/v1/memories", json={"content": "Bob rides a bicycle", "user_id": "bob"}, headers=h)
    await client.patch(f"/v1/memories/{tea['id']}", json={"content": "Ada drinks jasmine tea"}, headers=h)
    found = await client.get(
        "/console/memories",
        params={"query": "what does Ada drink", "mode": "hybrid", "user_id": "ada", "k": "5"},
    )
    assert found.status_code == 200
    assert "Ada drinks jasmine tea" in found.text and "Bob" not in found.text
    assert "Explain" in found.text and "<table class=\"explain\">" in found.text
    filtered = await client.get(
        "/console/memories", params={"query": "tea", "filter": '{"metadata.k": "food"}'}
    )
    assert "No memory matches." in filtered.text
    bad = await client.get("/console/memories", params={"query": "tea", "filter": '{"$bogus": 1}'})
    assert bad.status_code == 422 and "$bogus" in bad.text
    detail = await client.get(f"/console/memories/{tea['id']}")
    assert "ADD" in detail.text and "UPDATE" in detail.text
    # the update reads as a diff: the words taken out struck, the words put in marked
    removed, added = '<span class="visually-hidden">removed: </span>', '<span class="visually-hidden">added: </span>'
    assert f"Ada drinks <del>{removed}green </del><ins>{added}jasmine </ins>tea" in detail.text, detail.text
    assert detail.text.count("<h1>") == 1
    assert "Ada drinks green tea" in detail.text  # the ADD entry, as it was first stored


async def test_health_page_shows_the_score_and_charts(console: tuple[Any, str]) -> None:
    client, _ = console
    for _ in range(3):
        await client.get("/console/tasks")
    page = await client.get("/console/health", params={"window": "5m"})
    assert page.status_code == 200
    assert re.search(r'id="health-score">\d+<', page.text)
    assert "GET /console/tasks" in page.text and "<svg" in page.text
    fragment = await client.get("/console/health", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="health-panel"')
    bad = await client.get("/console/health", params={"window": "forever"})
    assert bad.status_code == 422


async def test_the_tail_stream_resumes_after_the_last_event_id(
    settings: Settings, database_url: str
) -> None:
    async with serve(settings.with_(sse_heartbeat_seconds=0.3)) as base, httpx.AsyncClient(
        base_url=base, timeout=10
    ) as http:
        created = await http.post(
            "/v1/admin/tenants", json={"name": "tail"}, headers={"Authorization": "Bearer test-admin-token"}
        )
        key = created.json()["api_key"]
        await sign_in(http, key)
        auth = {"Authorization": f"Bearer {key}"}
        posted = await http.post(
            "/v1/events", json={"items": [{"type": f"step.n{i}"} for i in range(3)]}, headers=auth
        )
        first = posted.json()["items"][0]["sequence"]
        page = await http.get("/console/events", params={"type": "step"})
        assert "step.n2" in page.text  # the newest events are on the page without JavaScript
        async with http.stream(
            "GET", "/console/events/stream", params={"type": "step"}, headers={"Last-Event-ID": str(first)}
        ) as stream:
            reader = SSEReader(stream)
            got = [(await reader.next_event())["type"] for _ in range(2)]
        assert got == ["step.n1", "step.n2"]
