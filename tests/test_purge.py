"""Purge leaves no trace: after ``DELETE ...?purge=true`` no table, file, read or cache
of the service holds the memory's content or any embedding it had.

The memory lives in a tenant the app holds in FAISS and in a keyword index, with a
snapshot on disk, and it has been updated once, so a dead FAISS position, two
versions, history rows and change-feed bodies all hold it before the purge. Each
place is first shown to hold it (so every check below can fail), then searched
again after the purge. The database is searched column by column, every column of
every table the schema has now, so a table added later is searched too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.runtime import Runtime
from memory_service.search import snapshots
from memory_service.search.keyword import IN_PROCESS
from tests.helpers import db_rows, unit_vectors
from tests.live_http import in_app_loop

SKIPPED_TYPES = {
    "bigint", "integer", "smallint", "real", "double precision", "numeric", "boolean",
    "uuid", "date", "timestamp with time zone", "timestamp without time zone", "interval",
}


def f32(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def traces_in_database(database_url: str, needle: str, vectors: list[np.ndarray]) -> list[str]:
    """``table.column`` of every public column holding ``needle`` in its text form, or
    one of ``vectors`` (a vector column equal to it, a bytea holding its bytes). One
    scan per table; only a table with a hit is looked at column by column."""
    found = []
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type, c.udt_name "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()
        assert len({c[0] for c in columns}) > 20, "the schema was not enumerated"
        by_table: dict[str, list[tuple[str, sql.Composable, Any]]] = {}
        for table, column, data_type, udt in columns:
            col = sql.Identifier(column)
            checks = by_table.setdefault(table, [])
            if udt == "vector":
                checks += [(column, sql.SQL("{} = %s").format(col), v) for v in vectors]
            elif udt == "bytea":
                checks.append((column, sql.SQL("position(%s IN {}) > 0").format(col), needle.encode()))
                checks += [(column, sql.SQL("position(%s IN {}) > 0").format(col), f32(v)) for v in vectors]
            elif data_type not in SKIPPED_TYPES:
                checks.append((column, sql.SQL("strpos({}::text, %s) > 0").format(col), needle))
        for table, checks in by_table.items():
            if not checks:
                continue
            where = sql.SQL(" OR ").join(clause for _, clause, _ in checks)
            statement = sql.SQL("SELECT count(*) FROM {} WHERE ").format(sql.Identifier(table))
            row = conn.execute(statement + where, [value for _, _, value in checks]).fetchone()
            if not row or not row[0]:
                continue
            for column, clause, value in checks:
                row = conn.execute(statement + clause, (value,)).fetchone()
                if row and row[0]:
                    found.append(f"{table}.{column}")
    return sorted(set(found))


async def stored_vector(client: Any, headers: dict[str, str], memory_id: str) -> np.ndarray:
    """The embedding as the service keeps it (normalised to unit length)."""
    r = await client.get(f"/v1/memories/{memory_id}", params={"include": "embedding"}, headers=headers)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embedding"], dtype=np.float32)


def traces_in_files(root: Path, patterns: list[bytes]) -> list[str]:
    """Files under ``root`` that hold one of ``patterns``. The service may be deleting a
    snapshot while this walks: a walk that meets a vanished file or folder starts again."""
    while True:
        try:
            return sorted(
                str(path)
                for path in root.rglob("*")
                if path.is_file() and any(p in path.read_bytes() for p in patterns)
            )
        except FileNotFoundError:
            continue


async def change_feed(client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    since = None
    while True:
        params: dict[str, Any] = {"types": "memory", "limit": 1000, "include": "embedding"}
        if since:
            params["since"] = since
        r = await client.get("/v1/changes", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        since = body["next_cursor"]
        if not body["has_more"]:
            return items


async def reads_of_the_past(
    client: Any, h: dict[str, str], memory_id: str, moments: list[str], vectors: list[np.ndarray]
) -> dict[str, str]:
    """What every read that can reach the past answers, by name."""
    out = {}
    for i, moment in enumerate(moments):
        r = await client.get(f"/v1/memories/{memory_id}", params={"as_of": moment, "include": "embedding"}, headers=h)
        out[f"get as_of {i}"] = f"{r.status_code} {r.text}"
        r = await client.get("/v1/memories", params={"as_of": moment}, headers=h)
        out[f"list as_of {i}"] = r.text
        for j, v in enumerate(vectors):
            body = {"embedding": v.tolist(), "k": 10, "as_of": moment}
            r = await client.post("/v1/memories/search", json=body, headers=h)
            assert r.status_code == 200, r.text
            out[f"search as_of {i} with vector {j}"] = r.text
    r = await client.get(f"/v1/memories/{memory_id}/history", headers=h)
    out["history"] = f"{r.status_code} {r.text}"
    out["changes"] = json.dumps(await change_feed(client, h))
    r = await client.get("/v1/changes/snapshot", params={"types": "memory"}, headers=h)
    out["changes snapshot"] = r.text
    r = await client.get("/v1/export", params={"types": "memories,events", "include_history": "true"}, headers=h)
    assert r.status_code == 200, r.text
    out["export"] = r.text
    return out


def holding(reads: dict[str, str], needle: str, vectors: list[np.ndarray]) -> list[str]:
    encoded = [base64.b64encode(f32(v)).decode() for v in vectors]
    return sorted(
        name for name, text in reads.items() if needle in text or any(e in text for e in encoded)
    )


@pytest.mark.parametrize("hnsw", [False, True])
def test_faiss_erase_wipes_live_and_dead_positions_and_their_files(hnsw: bool, tmp_path: Path) -> None:
    vectors = unit_vectors(40, seed=65)
    index = FaissIndex(384, FaissParams(flat_max=10), hnsw=hnsw)
    index.add(np.arange(1, 41), vectors)
    index.add([7], vectors[:1] * -1)  # an update: the old vector stays at a dead position
    index.save(tmp_path / "before")
    assert traces_in_files(tmp_path / "before", [f32(vectors[6]), f32(-vectors[0])])
    assert index.erase([7]) == 2 and index.erase([7]) == 0
    assert not index.contains(7) and index.size == 39
    index.save(tmp_path / "after")
    assert traces_in_files(tmp_path / "after", [f32(vectors[6]), f32(-vectors[0])]) == []
    assert traces_in_files(tmp_path / "after", [f32(vectors[7])])  # the others stay
    found, _ = index.search(vectors[6], 5)
    assert 7 not in found.tolist() and len(found) == 5


async def test_purge_erases_content_and_embeddings_from_every_place(
    client: Any, tenant: dict[str, Any], settings: Settings, database_url: str
) -> None:
    h, tid = tenant["headers"], uuid.UUID(tenant["id"])
    runtime: Runtime = client.app.state.runtime
    hot = runtime.hot_search
    assert hot is not None
    marker = f"zebracorn{uuid.uuid4().hex[:12]}"
    supplied, neighbour = unit_vectors(2, seed=63)
    r = await client.post(
        "/v1/memories", json={"content": f"{marker} was the first secret", "embedding": supplied.tolist()}, headers=h
    )
    assert r.status_code == 201, r.text
    memory_id = r.json()["id"]
    supplied = await stored_vector(client, h, memory_id)
    kept = await client.post("/v1/memories", json={"content": "a note that stays", "embedding": neighbour.tolist()}, headers=h)
    assert kept.status_code == 201
    first_moment = datetime.now(UTC).isoformat()
    edited = f"{marker} edited, the second secret"
    r = await client.patch(f"/v1/memories/{memory_id}", json={"content": edited}, headers=h)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    second_moment = datetime.now(UTC).isoformat()
    embedded = await stored_vector(client, h, memory_id)  # the model's, for the edit
    vectors = [supplied, embedded]

    # held in FAISS and in the keyword index, the edit's text in the query cache, a snapshot on disk
    r = await client.post("/v1/memories/search", json={"embedding": supplied.tolist(), "k": 2}, headers=h)
    assert r.json()["strategy"] == "faiss", r.text
    r = await client.post("/v1/memories/search", json={"query": edited, "k": 2, "mode": "keyword"}, headers=h)
    assert r.json()["strategy"] == IN_PROCESS and memory_id in r.text, r.text
    await client.post("/v1/memories/search", json={"query": edited, "k": 2, "mode": "vector"}, headers=h)
    held = hot.indexes.get(tid)
    assert held is not None and held.keywords is not None and held.keywords.vocabulary(marker)
    snapshots = settings.data_path / "faiss"
    assert await in_app_loop(client, hot.indexes.snapshot_all, hot.follower.mark) >= 1
    # the snapshot holds the supplied vector although the update replaced it: a dead position
    assert traces_in_files(snapshots / str(tid), [f32(supplied)])

    hits = runtime.embedder.hits
    runtime.embedder.embed_query(edited)  # the query cache holds the edit's text and vector
    assert runtime.embedder.hits == hits + 1
    everything = [marker.encode(), *map(f32, vectors)]
    moments = [first_moment, second_moment]
    before = await reads_of_the_past(client, h, memory_id, moments, vectors)
    assert holding(before, marker, vectors) == sorted(before), before
    assert {"memories.content", "memory_versions.content", "memory_versions.embedding",
            "memory_history.new_content", "changes.body"} <= set(traces_in_database(database_url, marker, vectors))

    r = await client.delete(f"/v1/memories/{memory_id}", params={"purge": "true"}, headers=h)
    assert r.status_code == 204, r.text

    after = await reads_of_the_past(client, h, memory_id, moments, vectors)
    assert holding(after, marker, vectors) == [], {k: after[k] for k in holding(after, marker, vectors)}
    assert after["get as_of 0"].startswith("404") and after["get as_of 1"].startswith("404")
    assert after["history"].startswith("404")
    feed = [c for c in json.loads(after["changes"]) if c["id"] == memory_id]
    assert [c["op"] for c in feed] == ["delete"] * 3 and all(c["entity"] is None for c in feed), feed
    assert traces_in_database(database_url, marker, vectors) == []
    # the snapshot that held it is gone, and the next one, written from the wiped index, is clean
    assert traces_in_files(snapshots, everything) == []
    assert await in_app_loop(client, hot.indexes.snapshot_all, hot.follower.mark) >= 1
    assert (snapshots / str(tid) / "CURRENT").exists()
    assert traces_in_files(snapshots, everything) == []
    held = hot.indexes.get(tid)
    assert held is not None and held.keywords is not None and not held.keywords.vocabulary(marker)
    r = await client.post("/v1/memories/search", json={"embedding": supplied.tolist(), "k": 5}, headers=h)
    assert memory_id not in r.text and kept.json()["id"] in r.text, r.text
    r = await client.post("/v1/memories/search", json={"query": marker, "k": 5, "mode": "keyword"}, headers=h)
    assert r.status_code == 200 and r.json()["results"] == [], r.text
    misses = runtime.embedder.misses
    runtime.embedder.embed_query(edited)  # the query cache forgot the text with its vector
    assert runtime.embedder.misses == misses + 1
    audit = db_rows(database_url, "SELECT kind, memories FROM erasure_audit WHERE tenant_id = %s", tid)
    assert audit == [("memory", 1)]


async def test_purging_a_memory_deleted_before_erases_its_past(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    h = tenant["headers"]
    marker = f"quokkalith{uuid.uuid4().hex[:12]}"
    r = await client.post("/v1/memories", json={"content": f"{marker} note"}, headers=h)
    memory_id = r.json()["id"]
    assert (await client.delete(f"/v1/memories/{memory_id}", headers=h)).status_code == 204
    assert traces_in_database(database_url, marker, [])  # a plain delete keeps the past
    r = await client.delete(f"/v1/memories/{memory_id}", params={"purge": "true"}, headers=h)
    assert r.status_code == 204, r.text
    assert traces_in_database(database_url, marker, []) == []
    # nothing left to erase: not found, and no second audit row
    r = await client.delete(f"/v1/memories/{memory_id}", params={"purge": "true"}, headers=h)
    assert r.status_code == 404
    rows = db_rows(database_url, "SELECT count(*) FROM erasure_audit WHERE tenant_id = %s", uuid.UUID(tenant["id"]))
    assert rows == [(1,)]


async def test_purge_by_scope_erases_every_memory_of_the_scope(
    client: Any, tenant: dict[str, Any], database_url: str
) -> None:
    h = tenant["headers"]
    marker, user = f"wombatrix{uuid.uuid4().hex[:12]}", f"u-{uuid.uuid4().hex[:8]}"
    ids, vectors = [], []
    for i in range(3):
        r = await client.post("/v1/memories", json={"content": f"{marker} {i}", "user_id": user}, headers=h)
        ids.append(r.json()["id"])
    await client.patch(f"/v1/memories/{ids[0]}", json={"content": f"{marker} edited"}, headers=h)
    for memory_id in ids:
        vectors.append(await stored_vector(client, h, memory_id))
    kept = await client.post("/v1/memories", json={"content": "another user's note", "user_id": "someone"}, headers=h)
    moment = datetime.now(UTC).isoformat()
    assert len(traces_in_database(database_url, marker, vectors)) >= 5

    r = await client.delete("/v1/memories", params={"user_id": user, "purge": "true"}, headers=h)
    assert r.json() == {"deleted": 3}
    assert traces_in_database(database_url, marker, vectors) == []
    r = await client.get("/v1/memories", params={"as_of": moment}, headers=h)
    assert [m["id"] for m in r.json()["items"]] == [kept.json()["id"]]
    audit = db_rows(database_url, "SELECT kind, memories FROM erasure_audit WHERE tenant_id = %s", uuid.UUID(tenant["id"]))
    assert audit == [("scope", 3)]


@pytest.fixture
def other_process(settings: Settings, database_url: str, tmp_path: Path) -> Settings:
    """The settings of another service process on the same database, data dir of its own."""
    return settings.with_(database_url=database_url, data_dir=str(tmp_path), faiss_poll_interval_s=0.5)


async def test_other_processes_wipe_a_purge_they_read_from_the_log_now_or_at_start(
    client: Any, tenant: dict[str, Any], database_url: str, other_process: Settings, hash_embedder: Embedder
) -> None:
    h, tid = tenant["headers"], uuid.UUID(tenant["id"])
    ids, vectors = [], []
    for i, v in enumerate(unit_vectors(4, seed=64)):
        r = await client.post("/v1/memories", json={"content": f"lumenvask{i} fact", "embedding": v.tolist()}, headers=h)
        ids.append(r.json()["id"])
        vectors.append(await stored_vector(client, h, ids[-1]))
    root = other_process.data_path / "faiss"

    running = await Runtime.start(other_process, embedder=hash_embedder)
    try:  # a process holding the tenant reads the purge from the change log
        hot = running.hot_search
        assert hot is not None
        held = await hot.indexes.admit(tid, wait=True)
        assert held is not None and held.keywords is not None
        await hot.indexes.snapshot_all(hot.follower.mark)
        assert traces_in_files(root, [f32(vectors[0])])
        assert (await client.delete(f"/v1/memories/{ids[0]}", params={"purge": "true"}, headers=h)).status_code == 204
        for _ in range(200):
            if not traces_in_files(root, [f32(vectors[0])]) and not held.keywords.vocabulary("lumenvask0"):
                break
            await asyncio.sleep(0.05)
        assert held.keywords.vocabulary("lumenvask1")
        assert not held.keywords.vocabulary("lumenvask0")
        assert await hot.indexes.snapshot_all(hot.follower.mark) >= 1
        assert traces_in_files(root, [f32(vectors[0])]) == []
        assert traces_in_files(root, [f32(vectors[1])])  # the others stay
    finally:
        await running.close()  # shutdown writes a snapshot of the tenant

    # a process that was down during a purge deletes the snapshot from before it at start
    assert traces_in_files(root, [f32(vectors[1])])
    r = await client.delete(f"/v1/memories/{ids[1]}", params={"purge": "true"}, headers=h)
    assert r.status_code == 204
    restarted = await Runtime.start(other_process.with_(faiss_memory_budget_mb=0), embedder=hash_embedder)
    try:
        assert restarted.hot_search is not None and await restarted.hot_search.wait_ready(60)
        assert traces_in_files(root, [f32(vectors[1])]) == []
    finally:
        await restarted.close()


def test_two_erasures_of_one_tenants_snapshots_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file another erase removed first is not an error: the snapshots are gone."""
    tenant = uuid.uuid4()
    index = FaissIndex(384, FaissParams(flat_max=10), hnsw=False)
    index.add(np.arange(1, 5), unit_vectors(4, seed=3))
    snapshots.write(tmp_path, tenant, index, 1, 384)
    real_unlink = os.unlink

    def raced(path: Any, *args: Any, **kwargs: Any) -> None:
        real_unlink(path, *args, **kwargs)
        if str(path).endswith("state.json"):  # the other erase got here as well
            raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "unlink", raced)
    assert snapshots.erase(tmp_path, tenant) is True
    assert not (tmp_path / str(tenant)).exists()
