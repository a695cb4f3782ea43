"""Erasure: ``?purge=true`` removes a memory's history and vector with it, keeping only an audit row."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import db_rows as rows
from tests.helpers import unit_vectors


async def test_purge_erases_history_and_keeps_only_an_audit_record(
    client: Any, tenant: dict, database_url: str
) -> None:
    h = tenant["headers"]
    vec = unit_vectors(3, seed=5)
    made = []
    for i, text in enumerate(["secret diary entry", "scoped secret one", "kept note"]):
        body = {"content": text, "embedding": vec[i].tolist(), "user_id": "u" if i else None}
        r = await client.post("/v1/memories", json=body, headers=h)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    await client.patch(f"/v1/memories/{made[0]}", json={"content": "secret diary, edited"}, headers=h)
    plain = await client.delete(f"/v1/memories/{made[2]}", headers=h)
    assert plain.status_code == 204
    assert (await client.get(f"/v1/memories/{made[2]}/history", headers=h)).json()["items"]

    assert (await client.delete(f"/v1/memories/{made[0]}", params={"purge": "true"}, headers=h)).status_code == 204
    r = await client.delete("/v1/memories", params={"user_id": "u", "purge": "true"}, headers=h)
    assert r.json() == {"deleted": 1}

    tid = uuid.UUID(tenant["id"])
    erased = [uuid.UUID(made[0]), uuid.UUID(made[1])]
    history = rows(database_url, "SELECT old_content, new_content FROM memory_history WHERE memory_id = ANY(%s)", erased)
    assert history == []
    assert rows(database_url, "SELECT count(*) FROM memories WHERE id = ANY(%s)", erased) == [(0,)]
    for memory_id in made[:2]:
        r = await client.get(f"/v1/memories/{memory_id}/history", headers=h)
        assert "secret" not in r.text
    audit = rows(database_url, "SELECT kind, memories FROM erasure_audit WHERE tenant_id = %s ORDER BY id", tid)
    assert audit == [("memory", 1), ("scope", 1)]
    search = await client.post("/v1/memories/search", json={"embedding": vec[0].tolist(), "k": 5}, headers=h)
    assert made[0] not in search.text and made[1] not in search.text
