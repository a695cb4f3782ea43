"""NDJSON import: batches of up to 1,000 lines commit on their own; a batch with a bad
line is rejected whole and the report names the line; duplicates count as such."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import assert_problem
from tests.helpers import page_all, unit_vectors

NDJSON = {"Content-Type": "application/x-ndjson"}


def line(i: int, vec: Any) -> str:
    return json.dumps({"content": f"imported {i}", "user_id": "imp", "embedding": vec})


async def test_import_commits_good_batches_and_names_bad_lines(client: Any, tenant: dict) -> None:
    h = {**tenant["headers"], **NDJSON}
    vecs = [[round(float(x), 4) for x in v] for v in unit_vectors(1203, seed=77)]
    lines = [line(i, vecs[i - 1]) for i in range(1, 1204)]
    lines[4] = line(1, vecs[0])  # line 5 repeats line 1: a duplicate, not an error
    lines[1099] = '{"content": "broken", '  # line 1100: not JSON; its batch (1001-1203) goes
    body = ("\n".join(lines) + "\n").encode()
    r = await client.post("/v1/memories/import", content=body, headers=h)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["lines"] == 1203
    assert (report["created"], report["duplicates"], report["rejected"]) == (999, 1, 203)
    assert (report["batches_committed"], report["batches_rejected"]) == (1, 1)
    assert [e["line"] for e in report["errors"]] == [1100]
    assert "JSON" in report["errors"][0]["reason"]
    stored = await page_all(client, tenant["headers"], {"user_id": "imp"})
    assert sorted(int(m["content"].split()[1]) for m in stored) == [
        i for i in range(1, 1001) if i != 5
    ]


async def test_import_reports_a_line_that_validation_refuses(client: Any, tenant: dict) -> None:
    h = {**tenant["headers"], **NDJSON}
    body = "\n".join([
        json.dumps({"content": "kept apart", "user_id": "v"}),
        json.dumps({"content": "", "user_id": "v"}),
        json.dumps({"content": "third", "user_id": "v", "importance": 7}),
    ])
    r = await client.post("/v1/memories/import", content=body.encode(), headers=h)
    assert r.status_code == 200, r.text
    report = r.json()
    assert [e["line"] for e in report["errors"]] == [3]  # undecodable lines are found first
    assert "importance" in report["errors"][0]["reason"]
    assert report["created"] == 0 and report["rejected"] == 3
    r = await client.post("/v1/memories/import", content=body.rsplit("\n", 1)[0].encode(), headers=h)
    report = r.json()
    assert [e["line"] for e in report["errors"]] == [2]
    assert "content" in report["errors"][0]["reason"]
    assert await page_all(client, tenant["headers"], {"user_id": "v"}) == []


async def test_import_needs_a_tenant_key(client: Any) -> None:
    r = await client.post("/v1/memories/import", content=b"{}\n", headers=NDJSON)
    assert_problem(r, 401)


async def test_import_refuses_other_media_and_names_an_oversized_line(
    client: Any, tenant: dict
) -> None:
    h = tenant["headers"]
    plain = await client.post(
        "/v1/memories/import",
        content=b'{"content": "ok"}\n',
        headers={**h, "Content-Type": "text/plain"},
    )
    assert_problem(plain, 415)
    big = "x" * (64 * 1024)
    body = f'{{"content": "fine"}}\n{{"content": "{big}"}}\n'.encode()
    r = await client.post(
        "/v1/memories/import", content=body, headers={**h, "Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["created"] == 0 and report["batches_rejected"] == 1
    assert [e["line"] for e in report["errors"]] == [2]
    listed = await client.get("/v1/memories", headers=h)
    assert "fine" not in [m["content"] for m in listed.json()["items"]]
