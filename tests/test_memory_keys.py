"""Memories named by namespace and key: upsert, get, delete, namespace listing."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import assert_problem

BY_KEY = "/v1/memories/by-key"


async def test_put_creates_then_replaces_and_get_delete_by_key(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    r = await client.put(
        f"{BY_KEY}/users.alice/prefs", json={"content": "likes green tea"}, headers=h
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["namespace"], first["key"], first["version"]) == ("users.alice", "prefs", 1)

    r = await client.put(
        f"{BY_KEY}/users.alice/prefs",
        json={"content": "likes black coffee", "metadata": {"v": 2}},
        headers=h,
    )
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["id"] == first["id"] and second["version"] == 2
    assert second["content"] == "likes black coffee" and second["metadata"] == {"v": 2}

    got = (await client.get(f"{BY_KEY}/users.alice/prefs", headers=h)).json()
    assert got["content"] == "likes black coffee"
    # a keyed memory is an ordinary memory too: by id, in search, with history
    assert (await client.get(f"/v1/memories/{first['id']}", headers=h)).json()["key"] == "prefs"
    hits = (
        await client.post(
            "/v1/memories/search", json={"query": "coffee", "namespace": "users.alice"}, headers=h
        )
    ).json()["results"]
    assert [hit["memory"]["id"] for hit in hits] == [first["id"]]
    history = (await client.get(f"/v1/memories/{first['id']}/history", headers=h)).json()
    assert [e["event"] for e in history["items"]] == ["ADD", "UPDATE"]

    assert (await client.delete(f"{BY_KEY}/users.alice/prefs", headers=h)).status_code == 204
    assert_problem(await client.get(f"{BY_KEY}/users.alice/prefs", headers=h), 404)
    assert_problem(await client.delete(f"{BY_KEY}/users.alice/prefs", headers=h), 404)


async def test_same_text_under_two_keys_is_two_memories_and_plain_adds_still_dedupe(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    a = await client.put(f"{BY_KEY}/ns/a", json={"content": "same words"}, headers=h)
    b = await client.put(f"{BY_KEY}/ns/b", json={"content": "same words"}, headers=h)
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    plain = await client.post("/v1/memories", json={"content": "same words", "namespace": "ns"}, headers=h)
    again = await client.post("/v1/memories", json={"content": "same words", "namespace": "ns"}, headers=h)
    assert plain.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == plain.json()["id"] and "key" not in plain.json()


async def test_if_match_guards_a_put(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    await client.put(f"{BY_KEY}/ns/k", json={"content": "one"}, headers=h)
    stale = await client.put(
        f"{BY_KEY}/ns/k", json={"content": "two"}, headers={**h, "If-Match": "7"}
    )
    assert_problem(stale, 412)
    ok = await client.put(f"{BY_KEY}/ns/k", json={"content": "two"}, headers={**h, "If-Match": "1"})
    assert ok.status_code == 200 and ok.json()["version"] == 2


async def test_concurrent_puts_of_one_new_key_make_one_memory(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    responses = await asyncio.gather(
        *[
            client.put(f"{BY_KEY}/race/key", json={"content": f"value {i}"}, headers=h)
            for i in range(6)
        ]
    )
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.status_code == 201 for r in responses) == 1
    listed = (await client.get("/v1/memories", params={"namespace": "race"}, headers=h)).json()
    assert len(listed["items"]) == 1 and listed["items"][0]["version"] == 6


async def test_another_tenant_cannot_see_or_delete_a_keyed_memory(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    await client.put(f"{BY_KEY}/ns/secret", json={"content": "mine"}, headers=tenant["headers"])
    other = other_tenant["headers"]
    assert_problem(await client.get(f"{BY_KEY}/ns/secret", headers=other), 404)
    assert_problem(await client.delete(f"{BY_KEY}/ns/secret", headers=other), 404)
    r = await client.put(f"{BY_KEY}/ns/secret", json={"content": "theirs"}, headers=other)
    assert r.status_code == 201
    mine = (await client.get(f"{BY_KEY}/ns/secret", headers=tenant["headers"])).json()
    assert mine["content"] == "mine"
    names = (await client.get("/v1/memories/namespaces", headers=other)).json()["items"]
    assert names == [{"namespace": "ns", "count": 1}]


async def test_bad_keyed_input_is_a_problem_and_writes_nothing(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    assert_problem(await client.put(f"{BY_KEY}/ns/k", json={"content": ""}, headers=h), 422)
    assert_problem(
        await client.put(f"{BY_KEY}/ns/k", json={"content": "x", "namespace": "other"}, headers=h),
        400,
    )
    assert_problem(await client.put(f"{BY_KEY}/ns/{'k' * 600}", json={"content": "x"}, headers=h), 422, mentions="key")
    assert_problem(await client.get("/v1/memories/namespaces", params={"max_depth": 0}, headers=h), 400)
    assert_problem(await client.get("/v1/memories/namespaces", params={"cursor": "nope"}, headers=h), 422)
    assert (await client.get("/v1/memories", headers=h)).json()["items"] == []


async def test_namespaces_by_prefix_suffix_and_depth_with_a_cursor(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    for ns in ["users.a.memories", "users.a.prefs", "users.b.memories", "users_x.c", "agents.z"]:
        r = await client.put(f"{BY_KEY}/{ns}/k1", json={"content": f"about {ns}"}, headers=h)
        assert r.status_code == 201, r.text
    await client.put(f"{BY_KEY}/users.a.memories/k2", json={"content": "more"}, headers=h)

    async def names(**params: Any) -> list[tuple[str, int]]:
        body = (await client.get("/v1/memories/namespaces", params=params, headers=h)).json()
        return [(i["namespace"], i["count"]) for i in body["items"]]

    assert await names(prefix="users") == [
        ("users.a.memories", 2), ("users.a.prefs", 1), ("users.b.memories", 1)
    ]
    assert await names(suffix="memories") == [("users.a.memories", 2), ("users.b.memories", 1)]
    assert await names(max_depth=2) == [
        ("agents.z", 1), ("users.a", 3), ("users.b", 1), ("users_x.c", 1)
    ]
    assert await names(prefix="users", max_depth=1) == [("users", 4)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/memories/namespaces", params=params, headers=h)).json()
        seen += [i["namespace"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == 5
