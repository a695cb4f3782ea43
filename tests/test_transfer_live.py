"""Data transfer over real HTTP: the CLI against a running server, SSE progress, model change.

The live server embeds with the test (hash) model while the session app uses
all-MiniLM-L6-v2, on the same database: an export from one imported into the
other is a real change of model, so memories must be embedded again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import numpy as np
import pytest
from conftest import ADMIN, new_tenant
from live_http import SSEReader, serve
from test_browser_migration import example

from cli.main import main
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder

CONTENTS = [f"note {i} about {topic}" for i, topic in enumerate(
    ["apples", "trains", "the sea", "violins", "granite", "tax forms", "owls", "rain"] * 5)]
QUERIES = ["apples and owls", "rain at sea", "tax forms", "violins on trains"]


@pytest.fixture(scope="module")
async def live(settings: Settings, database_url: str) -> AsyncIterator[str]:
    fast = settings.with_(sse_heartbeat_seconds=0.5, database_url=database_url)
    async with serve(fast) as url:
        yield url


async def live_tenant(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await http.post(f"{url}/v1/admin/tenants", json={"name": "live"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {**r.json(), "headers": {"Authorization": f"Bearer {r.json()['api_key']}"}}


async def cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def ranking(http: httpx.AsyncClient, url: str, t: dict[str, Any]) -> list[list[str]]:
    out = []
    for q in QUERIES:
        r = await http.post(f"{url}/v1/memories/search", json={"query": q, "k": 5},
                            headers=t["headers"])
        out.append([x["memory"]["content"] for x in r.json()["results"]])
    return out


async def test_cli_round_trip(live: str, tmp_path: Path, capsys: Any) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        source, target = await live_tenant(http, live), await live_tenant(http, live)
        items = [{"content": c} for c in CONTENTS]
        r = await http.post(f"{live}/v1/memories/batch", json={"items": items},
                            headers=source["headers"])
        assert r.status_code == 201
        path = tmp_path / "tenant.ndjson"
        assert await cli("export", "--url", live, "--key", source["api_key"], "-o", str(path),
                         "--types", "memories,tasks,environments") == 0
        lines = path.read_text().splitlines()
        assert json.loads(lines[-1])["counts"]["memory"] == len(CONTENTS)
        assert await cli("import", str(path), "--url", live, "--key", target["api_key"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["counts"]["memory"] == {"created": len(CONTENTS)}
        assert report["re_embedded"] is False
        assert await ranking(http, live, target) == await ranking(http, live, source)
        assert await cli("import", str(path), "--url", live, "--key", target["api_key"],
                         "--on-conflict", "fail") == 1
        assert "already exists" in capsys.readouterr().err
        assert await cli("import", str(path), "--url", live, "--key", "wrong") == 1


async def test_import_from_another_model_re_embeds(
    client: Any, live: str, tmp_path: Path, capsys: Any
) -> None:
    """Exported by the MiniLM app, imported by the hash-model server."""
    source = await new_tenant(client)
    r = await client.post("/v1/memories/batch", json={"items": [
        {"content": c} for c in CONTENTS[:6]]}, headers=source["headers"])
    assert r.status_code == 201
    exported = await client.get("/v1/export", params={"types": "memories"},
                                headers=source["headers"])
    path = tmp_path / "minilm.ndjson"
    path.write_bytes(exported.content)
    assert json.loads(exported.text.splitlines()[0])["model"]["name"] == "all-MiniLM-L6-v2"
    async with httpx.AsyncClient(timeout=60) as http:
        target = await live_tenant(http, live)
        assert await cli("import", str(path), "--url", live, "--key", target["api_key"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["re_embedded"] is True and report["source_model"] == "all-MiniLM-L6-v2"
        listed = await http.get(f"{live}/v1/memories", headers=target["headers"])
        hashed = HashEmbedder(384)
        for m in listed.json()["items"]:
            got = await http.get(f"{live}/v1/memories/{m['id']}",
                                 params={"include": "embedding"}, headers=target["headers"])
            vector = np.asarray(got.json()["embedding"], dtype=np.float32)
            assert np.allclose(vector, hashed.embed([m["content"]])[0], atol=1e-5)


async def test_migration_progress_on_sse(live: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        tenant = await live_tenant(http, live)
        async with http.stream("GET", f"{live}/v1/events/stream",
                               params={"type": "migration"}, headers=tenant["headers"]) as resp:
            assert resp.status_code == 200
            reader = SSEReader(resp)
            await asyncio.sleep(0.3)
            r = await http.post(f"{live}/v1/migrations/browser-storage", json=example(),
                                headers=tenant["headers"])
            assert r.status_code == 202, r.text
            seen = []
            while not seen or seen[-1]["type"] != "migration.completed":
                seen.append(await reader.next_event())
        progress = [e["attributes"] for e in seen if e["type"] == "migration.progress"]
        assert [p["entity"] for p in progress] == ["environments", "tasks", "memories"]
        assert [p["done_all"] for p in progress] == [2, 6, 9]
        assert all(p["migration_id"] == r.json()["id"] for p in progress)
