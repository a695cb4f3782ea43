"""Malformed, oversized and hostile input: a 4xx problem document, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import assert_problem
from tests.helpers import page_all, unit_vectors


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"content": "x", "embedding": [0.1] * 12}, 422, "384"),
        ({"content": "x", "embedding": [0.0] * 384}, 422, "zero vector"),
        ({"content": "x", "embedding": [1e39] * 384}, 422, "too large"),
        ({"content": "x", "embedding": ["a"] * 384}, 400, "embedding"),
        ({"content": ""}, 422, "content"),
        ({"content": "   "}, 422, "content"),
        ({"content": "a" * (32 * 1024 + 1)}, 413, "limit"),
        ({"content": "nul \u0000 byte"}, 422, "NUL"),
        ({}, 400, "content"),
        ({"content": 5}, 400, "content"),
        ({"content": "x", "importance": 1.5}, 400, "importance"),
        ({"content": "x", "metadata": []}, 400, "metadata"),
        ({"content": "x", "user_id": ""}, 400, "user_id"),
        ({"content": "x", "unknown_field": 1}, 400, "unknown_field"),
        ({"content": "x", "expires_at": "tomorrow"}, 400, "expires_at"),
        ({"content": "x", "expires_at": "2999-01-01T00:00:00"}, 422, "zone"),
    ],
)
async def test_bad_memory_is_refused(client: Any, tenant: dict, body: dict, status: int, mentions: str) -> None:
    h = tenant["headers"]
    assert_problem(await client.post("/v1/memories", json=body, headers=h), status, mentions=mentions)
    assert await page_all(client, h, {}) == []


async def test_a_long_embedding_is_normalised_not_zeroed(client: Any, tenant: dict) -> None:
    """Squares of large float32 values overflow: the length is taken in float64."""
    h = tenant["headers"]
    vec = [1e20] + [0.0] * 383
    r = await client.post("/v1/memories", json={"content": "far", "embedding": vec}, headers=h)
    assert r.status_code == 201, r.text
    hits = (await client.post(
        "/v1/memories/search", json={"embedding": [1.0] + [0.0] * 383, "k": 1}, headers=h
    )).json()["results"]
    assert hits[0]["memory"]["content"] == "far" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # longer than the largest float32, and still a direction
    r = await client.post("/v1/memories", json={"content": "farther", "embedding": [3e38] * 384}, headers=h)
    assert r.status_code == 201, r.text


async def test_malformed_json_and_invalid_utf8(client: Any, tenant: dict) -> None:
    h = {**tenant["headers"], "Content-Type": "application/json"}
    inf = b'{"content": "x", "embedding": [' + b",".join([b"1e999"] * 384) + b"]}"
    assert_problem(await client.post("/v1/memories", content=inf, headers=h), 400, mentions="out of range")
    nan = b'{"content": "x", "embedding": [' + b",".join([b"NaN"] * 384) + b"]}"
    assert_problem(await client.post("/v1/memories", content=nan, headers=h), 400)
    assert_problem(await client.post("/v1/memories", content=b'{"content": "x",', headers=h), 400)
    assert_problem(await client.post("/v1/memories", content=b'{"content": "\xff\xfe"}', headers=h), 400)
    assert_problem(await client.post("/v1/memories", content=b"[1, 2]", headers=h), 400)
    assert_problem(await client.post("/v1/memories/search", content=b"null", headers=h), 400)
    assert await page_all(client, tenant["headers"], {}) == []


async def test_oversized_batch_is_refused_whole(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vec = unit_vectors(1, seed=0)[0].tolist()
    items = [{"content": f"item {i}", "embedding": vec} for i in range(1001)]
    assert_problem(await client.post("/v1/memories/batch", json={"items": items}, headers=h), 413, mentions="1000")
    assert_problem(await client.post("/v1/memories/batch", json={"items": []}, headers=h), 422)
    assert await page_all(client, h, {}) == []


async def test_batch_with_one_bad_vector_writes_nothing(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(5, seed=2)
    items = [{"content": f"item {i}", "embedding": vecs[i].tolist()} for i in range(5)]
    items[3]["embedding"] = [0.5] * 383
    body = assert_problem(await client.post("/v1/memories/batch", json={"items": items}, headers=h), 422)
    assert body["errors"][0]["field"] == "items[3].embedding"
    assert await page_all(client, h, {}) == []


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"query": "x", "k": 0}, 400, "k"),
        ({"query": "x", "k": 1001}, 400, "k"),
        ({"query": "x", "embedding": [0.1] * 384}, 422, "exactly one"),
        ({}, 422, "exactly one"),
        ({"embedding": [0.1] * 3}, 422, "384"),
        ({"query": "x", "mode": "magic"}, 400, "mode"),
        ({"query": "x", "filter": {"metadata.a": {"$regex": "x"}}}, 422, "$regex"),
        ({"query": "x", "filter": {"colour": "red"}}, 422, "colour"),
        ({"query": "x", "filter": {"$or": {}}}, 422, "$or"),
        ({"query": "x", "filter": {"$and": [1]}}, 422, "$and[0]"),
        ({"query": "x", "filter": {"importance": {"$gt": "high"}}}, 422, "importance"),
        ({"query": "x", "filter": {"created_at": {"$gt": "yesterday"}}}, 422, "RFC 3339"),
        ({"query": "x", "filter": {"metadata.a": {"$in": "notalist"}}}, 422, "list"),
        ({"query": "x", "filter": {"metadata.a": {"$exists": "yes"}}}, 422, "$exists"),
        ({"query": "x", "filter": {"metadata.a b": 1}}, 422, "metadata"),
        ({"query": "x", "filter": {"metadata.a": {"$gt": True}}}, 422, "boolean"),
        ({"query": "x", "filter": {"metadata.a": {}}}, 422, "empty"),
    ],
)
async def test_bad_search_is_refused(client: Any, tenant: dict, body: dict, status: int, mentions: str) -> None:
    r = await client.post("/v1/memories/search", json=body, headers=tenant["headers"])
    assert_problem(r, status, mentions=mentions)


async def test_deeply_nested_filter_is_refused(client: Any, tenant: dict) -> None:
    flt: dict = {"metadata.a": 1}
    for _ in range(20):
        flt = {"$not": flt}
    r = await client.post("/v1/memories/search", json={"query": "x", "filter": flt}, headers=tenant["headers"])
    assert_problem(r, 422, mentions="nested")


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "eyJrIjoibWVtb3JpZXMiLCJwIjoxfQ.AAAAAAAAAAAAAAAAAAAAAA", "a.b.c", "x" * 600],
)
async def test_forged_cursor_is_refused(client: Any, tenant: dict, cursor: str) -> None:
    r = await client.get("/v1/memories", params={"cursor": cursor}, headers=tenant["headers"])
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code, mentions="cursor")


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1"])
async def test_bad_limit_is_refused(client: Any, tenant: dict, limit: str) -> None:
    r = await client.get("/v1/memories", params={"limit": limit}, headers=tenant["headers"])
    assert_problem(r, 400, mentions="limit")


@pytest.mark.parametrize("memory_id", ["abc", "1", "00000000-0000-0000-0000-00000000000g", "%20"])
async def test_malformed_id_is_refused(client: Any, tenant: dict, memory_id: str) -> None:
    h = tenant["headers"]
    assert_problem(await client.get(f"/v1/memories/{memory_id}", headers=h), 422, mentions="id")
    assert_problem(await client.delete(f"/v1/memories/{memory_id}", headers=h), 422, mentions="id")
    assert_problem(
        await client.patch(f"/v1/memories/{memory_id}", json={"importance": 0.2}, headers=h), 422
    )


async def test_bad_if_match_and_include(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vec = unit_vectors(1, seed=8)[0].tolist()
    mid = (await client.post("/v1/memories", json={"content": "x", "embedding": vec}, headers=h)).json()["id"]
    r = await client.patch(f"/v1/memories/{mid}", json={"importance": 0.2}, headers={**h, "If-Match": "abc"})
    assert_problem(r, 422, mentions="If-Match")
    assert_problem(await client.get(f"/v1/memories/{mid}", params={"include": "secrets"}, headers=h), 422)
    assert (await client.get(f"/v1/memories/{mid}", headers=h)).json()["version"] == 1


async def test_unknown_route_and_method_are_problems(client: Any, tenant: dict) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=tenant["headers"]), 404)
    r = await client.put("/v1/memories/search", json={}, headers=tenant["headers"])
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", ["/v1/events/stream", "/v1/executions/{eid}/replay"])
async def test_an_empty_last_event_id_is_malformed_not_absent(
    client: Any, tenant: dict, path: str
) -> None:
    """A stream must not quietly start from now when the client meant to resume. (The
    change feed documents an empty cursor as "from now", and keeps it.)"""
    h = tenant["headers"]
    if "{eid}" in path:
        eid = (await client.post("/v1/executions", json={}, headers=h)).json()["id"]
        path = path.format(eid=eid)
    r = await client.get(path, headers={**h, "Last-Event-ID": ""})
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code, mentions="Last-Event-ID")
    # given both ways, both are checked: a bad query value is not hidden by a good header
    r = await client.get(f"{path}?last_event_id=AAA", headers={**h, "Last-Event-ID": "0"})
    assert_problem(r, 422, mentions="last_event_id")
    r = await client.get(f"{path}?last_event_id=%C2%B2", headers=h)  # a digit, not ASCII
    assert_problem(r, 422, mentions="last_event_id")


@pytest.mark.parametrize("path", ["/v1/changes", "/v1/changes/snapshot", "/v1/export"])
async def test_a_types_list_that_names_nothing_is_refused(client: Any, tenant: dict, path: str) -> None:
    """Left out, ``types`` means every type; given, it must name one (empty items and
    blanks around them are allowed beside a name)."""
    h = tenant["headers"]
    for empty in ("", ",", " , "):
        r = await client.get(path, params={"types": empty}, headers=h)
        assert_problem(r, 422, mentions="types")
    word = "memories" if path == "/v1/export" else "memory"
    r = await client.get(path, params={"types": f",\f{word}\r,"}, headers=h)
    assert r.status_code == 200, r.text
