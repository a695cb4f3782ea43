"""What the database records of each write: history, versions, the indexes' change log
and the change feed, for a batch (duplicates skipped) as for single writes."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.helpers import db_rows as rows
from tests.helpers import unit_vectors


async def test_each_memory_a_batch_inserts_is_recorded_once_and_each_skipped_copy_never(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    h, tid = tenant["headers"], tenant["id"]
    vecs = unit_vectors(4, seed=61)
    single = await client.post(
        "/v1/memories", json={"content": "kept before", "embedding": vecs[0].tolist()}, headers=h
    )
    assert single.status_code == 201, single.text
    items = [
        {"content": "kept before", "embedding": vecs[0].tolist()},  # a copy of a stored one
        {"content": "first new", "embedding": vecs[1].tolist(), "user_id": "u"},
        {"content": "second new", "embedding": vecs[2].tolist(), "metadata": {"k": 1}},
        {"content": "first new", "embedding": vecs[1].tolist(), "user_id": "u"},  # in-batch copy
        {"content": "third new", "embedding": vecs[3].tolist()},
    ]
    batch = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert batch.status_code == 201, batch.text
    out = [m["id"] for m in batch.json()["items"]]
    # each copy is answered with the memory it copies
    assert out[0] == single.json()["id"] and out[3] == out[1] and len(set(out)) == 4

    stored = rows(
        database_url,
        "SELECT id::text, seq, content, metadata, embedding FROM memories "
        "WHERE tenant_id = %s ORDER BY seq",
        tid,
    )
    assert [r[2] for r in stored] == ["kept before", "first new", "second new", "third new"]
    ids = [r[0] for r in stored]
    assert ids == [out[0], out[1], out[2], out[4]]
    history = rows(
        database_url,
        "SELECT memory_id::text, event, new_content, new_metadata, version FROM memory_history "
        "WHERE tenant_id = %s ORDER BY id",
        tid,
    )
    assert history == [(r[0], "ADD", r[2], r[3], 1) for r in stored]
    versions = rows(
        database_url,
        "SELECT memory_id::text, version, memory_seq, content, embedding, valid_to "
        "FROM memory_versions WHERE tenant_id = %s ORDER BY memory_seq",
        tid,
    )
    assert [(v[0], v[1], v[2], v[3], v[5]) for v in versions] == [
        (r[0], 1, r[1], r[2], None) for r in stored
    ]
    for version, row in zip(versions, stored, strict=True):
        assert np.array_equal(version[4].to_numpy(), row[4].to_numpy())
    log = rows(
        database_url,
        "SELECT memory_id::text, memory_seq, op FROM memory_changes WHERE tenant_id = %s "
        "ORDER BY seq",
        tid,
    )
    assert log == [(r[0], r[1], "upsert") for r in stored]
    feed = rows(
        database_url,
        "SELECT entity_id::text, version, op, body->>'content' FROM changes "
        "WHERE tenant_id = %s AND entity_type = 'memory' ORDER BY seq",
        tid,
    )
    assert feed == [(r[0], 1, "upsert", r[2]) for r in stored]

    # an update and a delete are recorded as before, one row each
    patched = await client.patch(
        f"/v1/memories/{ids[1]}", json={"content": "first, edited"}, headers=h
    )
    assert patched.status_code == 200, patched.text
    assert (await client.delete(f"/v1/memories/{ids[2]}", headers=h)).status_code == 204
    events = rows(
        database_url,
        "SELECT memory_id::text, event, version FROM memory_history WHERE tenant_id = %s "
        "AND event <> 'ADD' ORDER BY id",
        tid,
    )
    assert events == [(ids[1], "UPDATE", 2), (ids[2], "DELETE", 2)]
    closed = rows(
        database_url,
        "SELECT memory_id::text, version FROM memory_versions WHERE tenant_id = %s "
        "AND valid_to IS NOT NULL ORDER BY memory_id, version",
        tid,
    )
    assert sorted(closed) == sorted([(ids[1], 1), (ids[2], 1)])
    tail = rows(
        database_url,
        "SELECT memory_id::text, op FROM memory_changes WHERE tenant_id = %s ORDER BY seq "
        "OFFSET 4",
        tid,
    )
    assert tail == [(ids[1], "upsert"), (ids[2], "delete")]
    feed_tail = rows(
        database_url,
        "SELECT entity_id::text, version, op FROM changes WHERE tenant_id = %s "
        "AND entity_type = 'memory' ORDER BY seq OFFSET 4",
        tid,
    )
    assert feed_tail == [(ids[1], 2, "upsert"), (ids[2], 2, "delete")]
