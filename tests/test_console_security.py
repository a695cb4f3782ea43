"""Console security: sessions, CSRF, tenant isolation and write-only secrets, over real HTTP.

Every check goes through the real app and database; the console must show a
tenant exactly what its key may see, and nothing of another tenant's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from console_support import NONCE, sign_in

PAGES = [
    "/console/tasks",
    "/console/executions",
    "/console/migration",
    "/console/environments",
    "/console/events",
    "/console/memories",
    "/console/health",
]


@pytest.fixture
async def console(client: Any) -> AsyncIterator[Any]:
    client.cookies.clear()
    yield client
    client.cookies.clear()


async def test_every_page_redirects_to_sign_in_without_a_session(console: Any) -> None:
    for path in [*PAGES, "/console/tasks/column?status=pending"]:
        response = await console.get(path, follow_redirects=False)
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole%2F")
    htmx = await console.get("/console/health", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/console/login")
    forged = await console.get(
        "/console/tasks", headers={"Cookie": "console_session=made-up"}, follow_redirects=False
    )
    assert forged.status_code == 303


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(
    console: Any, tenant: dict[str, Any]
) -> None:
    form = await console.get("/console/login")
    nonce = NONCE.search(form.text)
    assert nonce
    bad = await console.post(
        "/console/login", data={"_csrf": nonce[1], "api_key": "wrong", "next": ""}
    )
    assert bad.status_code == 401
    assert "console_session" not in bad.headers.get("set-cookie", "")
    good = await console.post(
        "/console/login",
        data={"_csrf": nonce[1], "api_key": tenant["api_key"], "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert good.status_code == 303
    assert good.headers["location"] == "/console/tasks"  # no open redirect
    cookie = next(c for c in good.headers.get_list("set-cookie") if "console_session=" in c)
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert tenant["api_key"] not in cookie  # the key stays on the server
    page = await console.get("/console/tasks")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers
    assert tenant["api_key"] not in page.text
    session = console.cookies.get("console_session")
    token = NONCE.search(page.text)
    assert token
    out = await console.post("/console/logout", data={"_csrf": token[1]}, follow_redirects=False)
    assert out.status_code == 303
    console.cookies.clear()
    replay = await console.get(
        "/console/tasks", headers={"Cookie": f"console_session={session}"}, follow_redirects=False
    )
    assert replay.status_code == 303  # the old session id is dead on the server too


async def test_forms_without_the_csrf_token_are_refused(
    console: Any, tenant: dict[str, Any]
) -> None:
    created = await console.post("/v1/tasks", json={"title": "csrf target"}, headers=tenant["headers"])
    task = created.json()
    token = await sign_in(console, tenant["api_key"])
    path = f"/console/tasks/{task['id']}/status"
    attempts = [
        {"data": {"status": "cancelled", "from": "pending"}},
        {"data": {"status": "cancelled", "from": "pending", "_csrf": "x" * 43}},
        {
            "data": {"status": "cancelled", "from": "pending", "_csrf": token},
            "headers": {"Origin": "https://evil.example"},
        },
    ]
    for attempt in attempts:
        refused = await console.post(path, follow_redirects=False, **attempt)
        assert refused.status_code == 403, attempt
    login = await console.post("/console/login", data={"api_key": tenant["api_key"]})
    assert login.status_code == 403  # the sign-in form needs its nonce too
    after = await console.get(f"/v1/tasks/{task['id']}", headers=tenant["headers"])
    assert after.json()["status"] == "pending"
    accepted = await console.post(
        path, data={"status": "cancelled", "from": "pending", "_csrf": token}, follow_redirects=False
    )
    assert accepted.status_code == 303
    after = await console.get(f"/v1/tasks/{task['id']}", headers=tenant["headers"])
    assert after.json()["status"] == "cancelled"


async def test_one_tenant_never_sees_another_tenants_data(
    console: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex[:12]
    b = other_tenant["headers"]
    task = (await console.post("/v1/tasks", json={"title": f"task-{marker}"}, headers=b)).json()
    env = (
        await console.post("/v1/environments", json={"name": f"env-{marker}"}, headers=b)
    ).json()
    memory = (
        await console.post(
            "/v1/memories", json={"content": f"memory {marker} about tea"}, headers=b
        )
    ).json()
    await console.post("/v1/events", json={"items": [{"type": f"b.x{marker}"}]}, headers=b)
    execution = (
        await console.post("/v1/executions", json={"agent_id": f"agent-{marker}"}, headers=b)
    ).json()
    await console.post("/v1/memories", json={"content": "tea for tenant a"}, headers=tenant["headers"])
    token = await sign_in(console, tenant["api_key"])
    for path in [
        *PAGES,
        "/console/memories?query=tea",
        "/console/memories?query=tea&mode=keyword",
    ]:
        page = await console.get(path)
        assert page.status_code == 200, (path, page.text)
        assert marker not in page.text, path
    for path in (
        f"/console/environments/{env['id']}",
        f"/console/memories/{memory['id']}",
        f"/console/executions/{execution['id']}",
    ):
        assert (await console.get(path)).status_code == 404
    fork = await console.post(
        f"/console/executions/{execution['id']}/fork", data={"_csrf": token, "at": "0"}
    )
    assert fork.status_code == 404
    move = await console.post(
        f"/console/tasks/{task['id']}/status",
        data={"status": "cancelled", "from": "pending", "_csrf": token},
    )
    assert move.status_code == 404
    unchanged = await console.get(f"/v1/tasks/{task['id']}", headers=b)
    assert unchanged.json()["status"] == "pending"


async def test_secret_values_never_reach_the_html(console: Any, tenant: dict[str, Any]) -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    env = (
        await console.post(
            "/v1/environments",
            json={"name": "prod", "secrets": {"DB_PASSWORD": value}},
            headers=tenant["headers"],
        )
    ).json()
    token = await sign_in(console, tenant["api_key"])
    second = f"other-{uuid.uuid4().hex}"
    created = await console.post(
        "/console/environments",
        data={
            "_csrf": token,
            "name": "staging",
            "config": '{"region": "eu"}',
            "is_active": "on",
            "secret_name": ["API_TOKEN", ""],
            "secret_value": [second, ""],
        },
    )
    assert created.status_code == 200  # followed the redirect to the list
    for path in ("/console/environments", f"/console/environments/{env['id']}"):
        page = await console.get(path)
        assert "DB_PASSWORD" in page.text
        assert value not in page.text and second not in page.text
    listing = await console.get("/console/environments")
    assert "API_TOKEN" in listing.text and "staging" in listing.text
    # a failed create sends back what was typed, except secret values
    failed = await console.post(
        "/console/environments",
        data={"_csrf": token, "name": "prod", "secret_name": "K", "secret_value": second},
    )
    assert failed.status_code == 409
    assert second not in failed.text
