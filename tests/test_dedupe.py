"""Semantic dedupe on add: within one tenant and scope, never across, all or nothing."""

from __future__ import annotations

from typing import Any

from tests.conftest import assert_problem

ORIGINAL = "The user prefers dark roast coffee in the morning"
REPHRASED = "The user prefers dark-roast coffee in the mornings"
UNRELATED = "The user's passport expires next spring"


async def add(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return await client.post("/v1/memories", json=body, headers=headers)


async def listing(client: Any, headers: dict[str, str], **scope: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/memories", params=scope, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_near_copy_merges_into_the_existing_memory(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    first = await add(client, h, content=ORIGINAL, user_id="u", metadata={"a": 1, "b": 1})
    assert first.status_code == 201
    again = await add(
        client,
        h,
        content=REPHRASED,
        user_id="u",
        metadata={"b": 2, "c": 3},
        dedupe=True,
        importance=0.8,
    )
    assert again.status_code == 200, again.text
    merged = again.json()
    assert merged["id"] == first.json()["id"]
    assert merged["content"] == ORIGINAL
    assert merged["metadata"] == {"a": 1, "b": 2, "c": 3}
    assert merged["version"] == 2
    assert merged["importance"] == 0.8
    history = (await client.get(f"/v1/memories/{merged['id']}/history", headers=h)).json()
    assert [e["event"] for e in history["items"]] == ["ADD", "UPDATE"]
    assert history["items"][1]["new_metadata"] == {"a": 1, "b": 2, "c": 3}
    # unrelated text and dedupe switched off both insert
    assert (await add(client, h, content=UNRELATED, user_id="u", dedupe=True)).status_code == 201
    assert (await add(client, h, content=REPHRASED, user_id="u")).status_code == 201
    assert len(await listing(client, h, user_id="u")) == 3


async def test_dedupe_never_crosses_scopes_or_tenants(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    first = (await add(client, h, content=ORIGINAL, user_id="u")).json()
    for body in (
        {"user_id": "v"},
        {"user_id": "u", "agent_id": "bot"},
        {},
    ):
        r = await add(client, h, content=REPHRASED, dedupe=True, **body)
        assert r.status_code == 201, (body, r.text)
        assert r.json()["id"] != first["id"]
    r = await add(client, other_tenant["headers"], content=REPHRASED, user_id="u", dedupe=True)
    assert r.status_code == 201
    assert (await client.get(f"/v1/memories/{first['id']}", headers=h)).json()["version"] == 1


async def test_batch_dedupes_against_the_store_and_itself(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    first = (await add(client, h, content=ORIGINAL, user_id="u")).json()
    items = [
        {"content": REPHRASED, "user_id": "u", "dedupe": True, "metadata": {"x": 1}},
        {"content": UNRELATED, "user_id": "u", "dedupe": True},
        {
            "content": "The user's passport expires next spring.",
            "user_id": "u",
            "dedupe": True,
            "metadata": {"y": 2},
        },
    ]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert r.status_code == 201, r.text
    out = r.json()["items"]
    assert out[0]["id"] == first["id"] and out[0]["metadata"] == {"x": 1}
    assert out[1]["id"] == out[2]["id"] != first["id"]
    assert out[2]["metadata"] == {"y": 2}
    assert len(await listing(client, h, user_id="u")) == 2


async def test_batch_with_a_bad_item_changes_nothing(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    first = (await add(client, h, content=ORIGINAL, user_id="u", metadata={"a": 1})).json()
    items = [
        {"content": REPHRASED, "user_id": "u", "dedupe": True, "metadata": {"a": 2}},
        {"content": "fine", "user_id": "u", "expires_at": "2001-01-01T00:00:00Z"},
    ]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert_problem(r, 422, mentions="expires_at")
    again = (await client.get(f"/v1/memories/{first['id']}", headers=h)).json()
    assert again["metadata"] == {"a": 1} and again["version"] == 1
    assert len(await listing(client, h, user_id="u")) == 1


async def test_tenant_default_and_settings_endpoint(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    r = await client.get("/v1/settings", headers=h)
    assert r.status_code == 200 and r.json()["dedupe"] is False
    r = await client.put("/v1/settings", json={"dedupe": True, "dedupe_threshold": 0.9}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"dedupe": True, "dedupe_threshold": 0.9}
    assert (await client.get("/v1/settings", headers=h)).json()["dedupe"] is True
    other = (await client.get("/v1/settings", headers=other_tenant["headers"])).json()
    assert other["dedupe"] is False
    first = (await add(client, h, content=ORIGINAL, user_id="u")).json()
    r = await add(client, h, content=REPHRASED, user_id="u")
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    r = await add(client, h, content=REPHRASED, user_id="u", dedupe=False)
    assert r.status_code == 201
    # a threshold above the pair's similarity keeps them apart
    await add(client, h, content=ORIGINAL, user_id="w")
    r = await add(client, h, content=REPHRASED, user_id="w", dedupe_threshold=0.9999)
    assert r.status_code == 201


async def test_bad_dedupe_input_is_a_problem(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    for body in (
        {"content": "x", "dedupe_threshold": 0},
        {"content": "x", "dedupe_threshold": 1.5},
        {"content": "x", "dedupe": "yes"},
    ):
        r = await add(client, h, **body)
        assert r.status_code in (400, 422), r.text
        assert_problem(r, r.status_code, mentions="dedupe")
    for body in ({"dedupe": True, "dedupe_threshold": 2}, {"dedupe_threshold": 0.5}, {"x": 1}):
        r = await client.put("/v1/settings", json=body, headers=h)
        assert r.status_code in (400, 422), r.text
        assert_problem(r, r.status_code)
    assert (await client.get("/v1/settings")).status_code == 401
