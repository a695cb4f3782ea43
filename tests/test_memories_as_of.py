"""Memories as they stood at a moment, against a reference kept by the test itself.

The test adds, updates and deletes memories, noting after each phase the moment
and what every memory held then (content, metadata, embedding as the service
reported it). Every as_of read is then checked against that record: get, list
and search, where the expected ranking is a brute-force cosine over the record.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import assert_problem
from tests.helpers import unit_vectors

Client = AsyncTestClient[Litestar]
Record = dict[str, dict[str, Any]]  # memory id -> {"content", "metadata", "embedding"}


async def moment() -> datetime:
    await asyncio.sleep(0.02)
    now = datetime.now(UTC)
    await asyncio.sleep(0.02)
    return now


async def embedding_of(client: Client, h: dict[str, str], mid: str) -> list[float]:
    r = await client.get(f"/v1/memories/{mid}", params={"include": "embedding"}, headers=h)
    return list(r.json()["embedding"])


def reference_top(record: Record, query: np.ndarray, k: int, topic: str | None = None) -> list[str]:
    scored = []
    for mid, m in record.items():
        if topic is not None and m["metadata"].get("topic") != topic:
            continue
        v = np.asarray(m["embedding"], dtype=np.float64)
        scored.append((float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query))), mid))
    return [mid for _, mid in sorted(scored, reverse=True)[:k]]


async def test_as_of_reads_match_the_recorded_history(client: Client, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    vectors = unit_vectors(8, seed=7)
    snapshots: list[tuple[datetime, Record]] = [(await moment(), {})]
    record: Record = {}
    ids = []
    for i in range(6):
        body = {
            "content": f"fact number {i}",
            "namespace": "kb",
            "metadata": {"topic": "a" if i % 2 else "b"},
            "embedding": vectors[i].tolist(),
        }
        r = await client.post("/v1/memories", json=body, headers=h)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        record[ids[-1]] = {"content": body["content"], "metadata": body["metadata"],
                           "embedding": vectors[i].tolist()}
    snapshots.append((await moment(), {k: dict(v) for k, v in record.items()}))

    await client.patch(f"/v1/memories/{ids[1]}", json={"content": "fact one, revised"}, headers=h)
    record[ids[1]] = {"content": "fact one, revised", "metadata": {"topic": "a"},
                      "embedding": await embedding_of(client, h, ids[1])}
    await client.patch(f"/v1/memories/{ids[2]}", json={"metadata": {"topic": "a"}}, headers=h)
    record[ids[2]] = {**record[ids[2]], "metadata": {"topic": "a"}}
    assert (await client.delete(f"/v1/memories/{ids[3]}", headers=h)).status_code == 204
    del record[ids[3]]
    snapshots.append((await moment(), {k: dict(v) for k, v in record.items()}))

    r = await client.post("/v1/memories", json={"content": "late fact", "namespace": "kb",
                                                "metadata": {"topic": "a"},
                                                "embedding": vectors[6].tolist()}, headers=h)
    late = r.json()["id"]
    record[late] = {"content": "late fact", "metadata": {"topic": "a"}, "embedding": vectors[6].tolist()}
    await client.delete(f"/v1/memories/{ids[0]}", headers=h)
    del record[ids[0]]
    snapshots.append((await moment(), {k: dict(v) for k, v in record.items()}))

    query = unit_vectors(1, seed=99)[0].astype(np.float64)
    for at, expected in snapshots:
        stamp = at.isoformat()
        listed = await client.get("/v1/memories", params={"as_of": stamp, "namespace": "kb"}, headers=h)
        assert listed.status_code == 200, listed.text
        got = {m["id"]: m["content"] for m in listed.json()["items"]}
        assert got == {mid: m["content"] for mid, m in expected.items()}, stamp
        for mid in [*ids, late]:
            one = await client.get(f"/v1/memories/{mid}", params={"as_of": stamp}, headers=h)
            if mid in expected:
                assert one.status_code == 200 and one.json()["content"] == expected[mid]["content"]
                assert one.json()["metadata"] == expected[mid]["metadata"]
            else:
                assert_problem(one, 404, mentions="not found")
        for k, topic in ((3, None), (10, None), (2, "a")):
            body: dict[str, Any] = {"embedding": query.tolist(), "k": k, "as_of": stamp, "namespace": "kb"}
            if topic:
                body["filter"] = {"metadata.topic": topic}
            found = await client.post("/v1/memories/search", json=body, headers=h)
            assert found.status_code == 200, found.text
            result = found.json()
            assert result["strategy"] == "as_of-exact"
            want = reference_top(expected, query, k, topic)
            assert [x["memory"]["id"] for x in result["results"]] == want, (stamp, k, topic)


async def test_updated_memory_keeps_its_old_embedding_and_expiry_counts(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    v = unit_vectors(2, seed=3)
    expires = datetime.now(UTC) + timedelta(hours=1)
    r = await client.post("/v1/memories", json={"content": "the sky is green", "embedding": v[0].tolist(),
                                                "expires_at": expires.isoformat()}, headers=h)
    mid = r.json()["id"]
    before = await moment()
    await client.patch(f"/v1/memories/{mid}", json={"content": "the sky is blue"}, headers=h)
    old = await client.get(f"/v1/memories/{mid}", params={"as_of": before.isoformat(),
                                                          "include": "embedding"}, headers=h)
    assert old.json()["content"] == "the sky is green" and old.json()["version"] == 1
    assert np.allclose(old.json()["embedding"], v[0], atol=1e-6)
    hit = await client.post("/v1/memories/search", json={"embedding": v[0].tolist(), "k": 1,
                                                         "as_of": before.isoformat()}, headers=h)
    assert hit.json()["results"][0]["score"] > 0.999
    after_expiry = (expires + timedelta(minutes=1)).isoformat()
    gone = await client.get(f"/v1/memories/{mid}", params={"as_of": after_expiry}, headers=h)
    assert_problem(gone, 404)


async def test_bad_as_of_and_other_tenants(
    client: Client, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    r = await client.post("/v1/memories", json={"content": "mine", "embedding": unit_vectors(1)[0].tolist()},
                          headers=h)
    mid = r.json()["id"]
    now = (await moment()).isoformat()
    assert_problem(await client.get(f"/v1/memories/{mid}", params={"as_of": "yesterday"}, headers=h),
                   400, mentions="as_of")
    assert_problem(await client.get("/v1/memories", params={"as_of": "2026-01-01T00:00:00"}, headers=h),
                   422, mentions="as_of")
    search = {"query": "mine", "as_of": now, "mode": "keyword"}
    assert_problem(await client.post("/v1/memories/search", json=search, headers=h), 422, mentions="mode")
    assert_problem(await client.post("/v1/memories/search", json={"query": "x", "as_of": "soon"}, headers=h),
                   400, mentions="as_of")
    o = other_tenant["headers"]
    assert_problem(await client.get(f"/v1/memories/{mid}", params={"as_of": now}, headers=o), 404)
    assert (await client.get("/v1/memories", params={"as_of": now}, headers=o)).json()["items"] == []
    theirs = await client.post("/v1/memories/search", json={"query": "mine", "as_of": now}, headers=o)
    assert theirs.status_code == 200 and theirs.json()["results"] == []
