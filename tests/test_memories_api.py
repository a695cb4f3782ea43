"""Memories over HTTP: add, duplicates, get, patch, delete, list, scope delete, history."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import assert_problem
from tests.helpers import page_all, unit_vectors


async def add(client: Any, h: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/memories", json=body, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def test_add_returns_the_contract_shape(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = await add(
        client, h, content="likes green tea", user_id="u", agent_id="a", run_id="r",
        namespace="n", metadata={"topic": "food"}, importance=0.9,
    )
    expected = {"id", "content", "user_id", "agent_id", "run_id", "namespace", "metadata",
                "importance", "created_at", "updated_at", "expires_at", "version"}
    assert set(m) == expected
    assert m["version"] == 1 and m["importance"] == 0.9 and m["metadata"] == {"topic": "food"}
    assert m["created_at"].endswith("Z") or "+" in m["created_at"]
    got = (await client.get(f"/v1/memories/{m['id']}", headers=h)).json()
    assert got == m


async def test_exact_duplicate_in_same_scope_returns_existing_with_200(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    first = await add(client, h, content="Paris is the capital of France", user_id="u1")
    r = await client.post(
        "/v1/memories", json={"content": "  paris is the   capital of France ", "user_id": "u1"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    # another scope is another memory
    other = await add(client, h, content="Paris is the capital of France", user_id="u2")
    assert other["id"] != first["id"]


async def test_get_with_embedding(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vec = unit_vectors(1, seed=7)[0]
    m = await add(client, h, content="vector supplied", embedding=vec.tolist())
    r = await client.get(f"/v1/memories/{m['id']}", params={"include": "embedding"}, headers=h)
    emb = r.json()["embedding"]
    assert len(emb) == 384
    assert abs(sum(a * b for a, b in zip(emb, vec.tolist(), strict=True)) - 1.0) < 1e-4
    assert "embedding" not in (await client.get(f"/v1/memories/{m['id']}", headers=h)).json()


async def test_patch_reembeds_bumps_version_and_honours_if_match(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = await add(client, h, content="I live in Berlin", user_id="u")
    r = await client.patch(
        f"/v1/memories/{m['id']}", json={"content": "I moved to Tokyo", "metadata": {"k": 1}},
        headers={**h, "If-Match": "1"},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["version"] == 2 and updated["content"] == "I moved to Tokyo"
    assert updated["metadata"] == {"k": 1}
    stale = await client.patch(
        f"/v1/memories/{m['id']}", json={"importance": 0.1}, headers={**h, "If-Match": "1"}
    )
    assert_problem(stale, 412, mentions="version")
    # the new content is what search finds now
    r = await client.post(
        "/v1/memories/search", json={"query": "Which city in Japan?", "k": 1, "user_id": "u"},
        headers=h,
    )
    assert r.json()["results"][0]["memory"]["content"] == "I moved to Tokyo"
    assert r.json()["results"][0]["memory"]["version"] == 2


async def test_patch_expiry_and_validation(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = await add(client, h, content="temporary", expires_at="2999-01-01T00:00:00Z")
    r = await client.patch(f"/v1/memories/{m['id']}", json={"expires_at": None}, headers=h)
    assert r.status_code == 200 and r.json()["expires_at"] is None
    assert_problem(await client.patch(f"/v1/memories/{m['id']}", json={}, headers=h), 422)
    assert_problem(
        await client.patch(f"/v1/memories/{m['id']}", json={"importance": 2}, headers=h), 400
    )


async def test_expired_memories_are_invisible(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = await add(client, h, content="expires soon", expires_at="2999-01-01T00:00:00Z")
    assert_problem(
        await client.post(
            "/v1/memories", json={"content": "x", "expires_at": "2000-01-01T00:00:00Z"}, headers=h
        ),
        422,
        mentions="future",
    )
    assert (await client.get(f"/v1/memories/{m['id']}", headers=h)).status_code == 200


async def test_delete_removes_from_get_list_and_search(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vec = unit_vectors(1, seed=3)[0].tolist()
    m = await add(client, h, content="to be deleted", embedding=vec, user_id="d")
    assert (await client.delete(f"/v1/memories/{m['id']}", headers=h)).status_code == 204
    assert_problem(await client.get(f"/v1/memories/{m['id']}", headers=h), 404)
    assert_problem(await client.delete(f"/v1/memories/{m['id']}", headers=h), 404)
    r = await client.post("/v1/memories/search", json={"embedding": vec, "k": 5}, headers=h)
    assert all(hit["memory"]["id"] != m["id"] for hit in r.json()["results"])
    assert await page_all(client, h, {"user_id": "d"}) == []
    # the same content can be added again after a delete
    again = await add(client, h, content="to be deleted", embedding=vec, user_id="d")
    assert again["id"] != m["id"]


async def test_history_records_add_update_delete(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    m = await add(client, h, content="v1 text", metadata={"a": 1})
    await client.patch(f"/v1/memories/{m['id']}", json={"content": "v2 text"}, headers=h)
    await client.delete(f"/v1/memories/{m['id']}", headers=h)
    r = await client.get(f"/v1/memories/{m['id']}/history", headers=h)
    items = r.json()["items"]
    assert [i["event"] for i in items] == ["ADD", "UPDATE", "DELETE"]
    assert items[0]["new_content"] == "v1 text" and items[0]["version"] == 1
    assert items[1]["old_content"] == "v1 text" and items[1]["new_content"] == "v2 text"
    assert items[1]["old_metadata"] == {"a": 1} and items[1]["version"] == 2
    assert items[2]["old_content"] == "v2 text"
    assert set(items[0]) == {"event", "old_content", "new_content", "old_metadata",
                             "new_metadata", "at", "version"}


async def test_list_by_scope_and_delete_by_scope(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(7, seed=11)
    for i in range(5):
        await add(client, h, content=f"a{i}", user_id="alice", namespace="ns", embedding=vecs[i].tolist())
    for i in range(2):
        await add(client, h, content=f"b{i}", user_id="bob", embedding=vecs[5 + i].tolist())
    alice = await page_all(client, h, {"user_id": "alice", "limit": 2})
    assert [m["content"] for m in alice] == [f"a{i}" for i in range(5)]
    assert_problem(await client.delete("/v1/memories", headers=h), 422, mentions="scope")
    r = await client.delete("/v1/memories", params={"user_id": "alice", "namespace": "ns"}, headers=h)
    assert r.status_code == 200 and r.json() == {"deleted": 5}
    assert await page_all(client, h, {"user_id": "alice"}) == []
    assert len(await page_all(client, h, {"user_id": "bob"})) == 2


async def test_batch_is_all_or_nothing(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(3, seed=5)
    good = [{"content": f"batch {i}", "user_id": "b", "embedding": vecs[i].tolist()} for i in range(2)]
    bad = {"content": "", "user_id": "b"}
    r = await client.post("/v1/memories/batch", json={"items": [*good, bad]}, headers=h)
    body = assert_problem(r, 422)
    assert body["errors"][0]["field"] == "items[2].content"
    assert await page_all(client, h, {"user_id": "b"}) == []
    r = await client.post("/v1/memories/batch", json={"items": [*good, good[0]]}, headers=h)
    assert r.status_code == 201
    ids = [m["id"] for m in r.json()["items"]]
    assert len(ids) == 3 and ids[0] == ids[2] and len(set(ids)) == 2
    assert len(await page_all(client, h, {"user_id": "b"})) == 2


async def test_200_concurrent_adds_from_8_clients_are_all_stored(client: Any, tenant: dict) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(200, seed=99)

    async def worker(w: int) -> list[int]:
        codes = []
        for i in range(25):
            n = w * 25 + i
            r = await client.post(
                "/v1/memories",
                json={"content": f"concurrent memory {n}", "user_id": "c", "embedding": vecs[n].tolist()},
                headers=h,
            )
            codes.append(r.status_code)
        return codes

    codes = await asyncio.gather(*(worker(w) for w in range(8)))
    assert all(c == 201 for batch in codes for c in batch)
    stored = await page_all(client, h, {"user_id": "c", "limit": 1000})
    assert sorted(m["content"] for m in stored) == sorted(f"concurrent memory {n}" for n in range(200))
