"""The console's migration wizard: upload, dry-run report, run with progress, roll back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from console_support import sign_in

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "browser-storage.json"


@pytest.fixture
async def console(client: Any, tenant: dict[str, Any]) -> AsyncIterator[tuple[Any, str]]:
    token = await sign_in(client, tenant["api_key"])
    yield client, token
    client.cookies.clear()


async def job_status(client: Any, path: str, until: set[str]) -> str:
    for _ in range(300):
        page = await client.get(path)
        status = re.search(r'id="job-status"[^>]*>([a-z_]+)<', page.text)
        assert status, page.text
        if status[1] in until:
            return status[1]
        await asyncio.sleep(0.1)
    raise AssertionError("the migration did not finish")


async def test_dry_run_run_and_roll_back(console: tuple[Any, str], tenant: dict[str, Any]) -> None:
    client, token = console
    content = EXAMPLE.read_bytes()
    report = await client.post(
        "/console/migration/dry-run",
        data={"_csrf": token},
        files={"file": ("storage.json", content, "application/json")},
    )
    assert report.status_code == 200, report.text
    assert 'id="dry-run-counts"' in report.text and "tasks" in report.text
    assert "s3cr3t-staging" not in report.text  # the upload stays on the server
    before = (await client.get("/v1/tasks", headers=tenant["headers"])).json()["items"]
    assert before == []  # a dry run writes nothing
    upload_id = re.search(r'name="upload_id" value="([^"]+)"', report.text)
    assert upload_id
    started = await client.post(
        "/console/migration/run",
        data={"_csrf": token, "upload_id": upload_id[1], "skip_invalid": "on"},
        follow_redirects=False,
    )
    assert started.status_code == 303
    job = started.headers["location"]
    assert await job_status(client, job, {"completed", "failed"}) == "completed"
    page = await client.get(job)
    assert "<progress" in page.text
    migrated = (await client.get("/v1/tasks", headers=tenant["headers"])).json()["items"]
    assert migrated
    rolled = await client.post(f"{job}/rollback", data={"_csrf": token})
    assert rolled.status_code == 200
    assert await job_status(client, job, {"rolled_back"}) == "rolled_back"
    after = (await client.get("/v1/tasks", headers=tenant["headers"])).json()["items"]
    assert after == []


async def test_bad_uploads_are_explained(console: tuple[Any, str]) -> None:
    client, token = console
    empty = await client.post("/console/migration/dry-run", data={"_csrf": token, "pasted": ""})
    assert empty.status_code == 422 and "choose an export file" in empty.text
    garbage = await client.post(
        "/console/migration/dry-run", data={"_csrf": token, "pasted": "not json"}
    )
    assert garbage.status_code == 422 and "not JSON" in garbage.text
    expired = await client.post("/console/migration/run", data={"_csrf": token, "upload_id": "nope"})
    assert expired.status_code == 404
