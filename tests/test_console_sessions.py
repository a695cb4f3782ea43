"""Console sessions and uploads in PostgreSQL: hashed ids, separate tables, revocation, expiry.

A cookie is only ever a session id: no value of it names an upload or sets a
session's CSRF token. The table keeps a hash of the id, an upload is sealed and
belongs to one session, and the sweeper removes sessions that expired or whose key
was revoked, with their uploads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN
from console_support import sign_in
from helpers import db_rows
from live_http import in_app_loop

from memory_service.config import Settings, SettingsError, public_origin

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "browser-storage.json"


def digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@pytest.fixture
async def console(client: Any) -> AsyncIterator[Any]:
    client.cookies.clear()
    yield client
    client.cookies.clear()


async def upload(console: Any, token: str) -> str:
    report = await console.post(
        "/console/migration/dry-run", data={"_csrf": token, "pasted": EXAMPLE.read_text()}
    )
    assert report.status_code == 200, report.text
    found = re.search(r'name="upload_id" value="([^"]+)"', report.text)
    assert found
    return found[1]


async def test_a_cookie_names_a_session_and_nothing_else(
    console: Any, tenant: dict[str, Any], other_tenant: dict[str, Any], database_url: str
) -> None:
    token = await sign_in(console, tenant["api_key"])
    session_id = console.cookies.get("console_session")
    upload_id = await upload(console, token)

    stored = db_rows(database_url, "SELECT id_hash, csrf_token FROM console_sessions WHERE id_hash = %s",
                     digest(session_id))
    assert stored and stored[0][1] == token  # kept under the id's hash, never the id itself
    assert not db_rows(database_url, "SELECT 1 FROM console_sessions WHERE id_hash = %s",
                       session_id.encode())
    sealed = db_rows(database_url, "SELECT payload FROM console_uploads WHERE session_hash = %s",
                     digest(session_id))
    assert len(sealed) == 1 and sealed[0][0].startswith("fernet:")
    assert "s3cr3t-staging" not in sealed[0][0]  # the export's secret values are sealed

    for forged in (f"upload:{session_id}:{upload_id}", upload_id, f"{session_id}:{upload_id}",
                   "x" * 500, '{"key": "k", "csrf": "x"}'):
        console.cookies.clear()
        page = await console.get(
            "/console/tasks", headers={"Cookie": f"console_session={forged}"}, follow_redirects=False
        )
        assert page.status_code == 303, (forged, page.status_code)
        assert page.headers["location"].startswith("/console/login")

    # another session, even of the same tenant, cannot run this upload
    for other in (other_tenant, tenant):
        other_token = await sign_in(console, other["api_key"])
        refused = await console.post(
            "/console/migration/run", data={"_csrf": other_token, "upload_id": upload_id},
            follow_redirects=False,
        )
        assert refused.status_code == 404, refused.text
    tasks = await console.get("/v1/tasks", headers=tenant["headers"])
    assert tasks.json()["items"] == []


async def test_revoked_and_expired_sessions_end_and_are_swept(
    console: Any, app: Any, tenant: dict[str, Any], database_url: str
) -> None:
    second = await console.post(f"/v1/admin/tenants/{tenant['id']}/keys", headers=ADMIN)
    assert second.status_code == 201
    second_key = second.json()["api_key"]
    await sign_in(console, second_key)
    revoked_session = console.cookies.get("console_session")
    prefix = second_key.split("_")[1]
    gone = await console.delete(f"/v1/admin/tenants/{tenant['id']}/keys/{prefix}", headers=ADMIN)
    assert gone.status_code == 204
    page = await console.get("/console/tasks", follow_redirects=False)
    assert page.status_code == 303  # revoking the key ended its session at once

    token = await sign_in(console, tenant["api_key"])
    expired_session = console.cookies.get("console_session")
    await upload(console, token)
    db_rows(database_url, "UPDATE console_sessions SET expires_at = now() - interval '1 second' "
            "WHERE id_hash = %s RETURNING 1", digest(expired_session))
    page = await console.get("/console/tasks", follow_redirects=False)
    assert page.status_code == 303  # an expired session is no session

    store = app.state.runtime.console_sessions
    assert await in_app_loop(console, store.sweep) >= 2
    for session_id in (revoked_session, expired_session):
        assert not db_rows(database_url, "SELECT 1 FROM console_sessions WHERE id_hash = %s",
                           digest(session_id))
        assert not db_rows(database_url, "SELECT 1 FROM console_uploads WHERE session_hash = %s",
                           digest(session_id))


@pytest.mark.parametrize("bad", ["memory.example.com", "https://memory.example.com/console",
                                 "ftp://memory.example.com", "https://user@memory.example.com",
                                 "https://memory.example.com:99999"])
def test_the_public_url_must_be_an_origin(bad: str) -> None:
    with pytest.raises(SettingsError, match="MEMORY_PUBLIC_URL"):
        Settings(public_url=bad).validate()


def test_the_public_origin_keeps_scheme_host_and_port() -> None:
    assert public_origin("https://Memory.Example.com:8443/") == "https://memory.example.com:8443"
    assert public_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
