"""Hot search: FAISS stays consistent with PostgreSQL, within and across processes.

Embeddings are supplied (or come from the hash embedder): the model is beside
the point here. Planner recall is checked against brute force over the same
vectors; restart is checked by kill -9 of a real service process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.runtime import Runtime
from tests.conftest import ADMIN, new_tenant
from tests.helpers import eventually, settled, unit_vectors


def clustered(n: int, seed: int) -> np.ndarray:
    """Clusters in a 24-dimensional subspace: as easy for HNSW as real embeddings."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((24, 384)) / np.sqrt(24)
    centres = np.random.default_rng(4321).standard_normal((50, 24))
    z = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, 24))
    x = z @ basis + 0.05 * rng.standard_normal((n, 384))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


async def search(client: Any, headers: dict[str, str], vector: Any, **extra: Any) -> dict[str, Any]:
    body = {"embedding": [float(x) for x in vector], "k": extra.pop("k", 5), **extra}
    r = await client.post("/v1/memories/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_write_is_found_through_faiss_as_soon_as_it_returns(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(30, seed=11)
    for i, v in enumerate(vecs):
        r = await client.post(
            "/v1/memories", json={"content": f"fact {i}", "embedding": v.tolist()}, headers=h
        )
        assert r.status_code == 201, r.text
        body = await search(client, h, v, k=1)
        assert body["strategy"] == "faiss"
        assert body["results"][0]["memory"]["content"] == f"fact {i}"


async def test_deletes_and_reembedded_updates_take_effect_at_once(
    client: Any, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    vecs = unit_vectors(20, seed=12)
    items = [{"content": f"note {i}", "embedding": v.tolist()} for i, v in enumerate(vecs)]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    ids = [m["id"] for m in r.json()["items"]]
    r = await client.delete(f"/v1/memories/{ids[3]}", headers=h)
    assert r.status_code == 204
    body = await search(client, h, vecs[3], k=20)
    assert body["strategy"] == "faiss"
    assert ids[3] not in [hit["memory"]["id"] for hit in body["results"]]
    assert len(body["results"]) == 19
    # a new content is re-embedded: the old vector no longer finds it first, the new one does
    r = await client.patch(
        f"/v1/memories/{ids[5]}", json={"content": "completely different words"}, headers=h
    )
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/memories/{ids[5]}", params={"include": "embedding"}, headers=h)
    new_vector = r.json()["embedding"]
    body = await search(client, h, new_vector, k=1)
    assert body["strategy"] == "faiss" and body["results"][0]["memory"]["id"] == ids[5]
    body = await search(client, h, vecs[5], k=1)
    assert body["results"][0]["memory"]["id"] != ids[5]
    r = await client.delete("/v1/memories", params={"user_id": "nobody"}, headers=h)
    assert r.status_code == 200


async def test_faiss_never_crosses_tenants(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    vecs = unit_vectors(10, seed=13)
    for who in (tenant, other_tenant):
        items = [
            {"content": f"{who['name']} {i}", "embedding": v.tolist()} for i, v in enumerate(vecs)
        ]
        r = await client.post("/v1/memories/batch", json={"items": items}, headers=who["headers"])
        assert r.status_code == 201
    for who in (tenant, other_tenant):
        for v in vecs:
            body = await search(client, who["headers"], v, k=10)
            assert body["strategy"] == "faiss"
            names = {hit["memory"]["content"].split()[0] for hit in body["results"]}
            assert names == {who["name"]}


@pytest.fixture
async def second_process(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Runtime]:
    """Another service process on the same database (its own data dir and indexes)."""
    runtime = await Runtime.start(
        settings.with_(
            database_url=database_url, data_dir=str(tmp_path), faiss_poll_interval_s=0.5
        ),
        embedder=hash_embedder,
    )
    yield await settled(runtime)
    await runtime.close()


async def test_a_second_process_sees_inserts_updates_and_deletes_through_faiss(
    client: Any, tenant: dict[str, Any], second_process: Runtime
) -> None:
    """Each change must reach the second process's FAISS index: every check asks for
    the FAISS strategy and for the changed row's own vector back (cosine 1) among
    twenty other rows, so neither a fallback to PostgreSQL nor a lucky ranking passes."""
    h, tid = tenant["headers"], tenant["id"]
    vecs = unit_vectors(22, seed=14)
    items = [{"content": f"other {i}", "embedding": v.tolist()} for i, v in enumerate(vecs[2:])]
    assert (await client.post("/v1/memories/batch", json={"items": items}, headers=h)).status_code == 201
    r = await client.post(
        "/v1/memories", json={"content": "first", "embedding": vecs[0].tolist()}, headers=h
    )
    first = r.json()["id"]

    async def top(vector: Any) -> tuple[str, str, float]:
        """The strategy, the best hit's id and its score."""
        result = await second_process.search.search(
            uuid.UUID(tid), SearchRequest(embedding=[float(x) for x in vector], k=3)
        )
        best = result.results[0]
        return result.strategy, best.memory.id, best.score

    async def faiss_finds(memory_id: str, vector: Any) -> bool:
        strategy, found, score = await top(vector)
        return strategy == "faiss" and found == memory_id and score > 0.999

    # the first search loads the tenant into the second process
    await eventually(partial(faiss_finds, first, vecs[0]), "the tenant held by the second process")
    r = await client.post(
        "/v1/memories", json={"content": "second", "embedding": vecs[1].tolist()}, headers=h
    )
    second = r.json()["id"]
    await eventually(partial(faiss_finds, second, vecs[1]), "the insert")

    # a new content is embedded again: the row's vector changes
    r = await client.patch(f"/v1/memories/{first}", json={"content": "moved away"}, headers=h)
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/memories/{first}", params={"include": "embedding"}, headers=h)
    new_vector = r.json()["embedding"]

    async def moved() -> bool:
        old = await top(vecs[0])  # the old vector no longer finds it as itself
        return await faiss_finds(first, new_vector) and not (old[1] == first and old[2] > 0.999)

    await eventually(moved, "the update")
    await client.delete(f"/v1/memories/{second}", headers=h)

    async def deleted() -> bool:
        strategy, found, _ = await top(vecs[1])
        return strategy == "faiss" and found != second

    await eventually(deleted, "the delete")
    held = second_process.hot_search.indexes.ready(uuid.UUID(tid))
    assert held is not None and held.index.size == 21


async def test_the_planner_keeps_exact_k_and_recall_at_every_selectivity(
    settings: Settings, database_url: str, hash_embedder: Embedder, tmp_path: Path, client: Any
) -> None:
    # small thresholds so that 2,000 rows exercise HNSW, post-filtering and the exact pass
    runtime = await Runtime.start(
        settings.with_(
            database_url=database_url,
            data_dir=str(tmp_path),
            faiss_flat_max=500,
            faiss_exact_max=100,
            faiss_post_filter_max=400,
        ),
        embedder=hash_embedder,
    )
    try:
        tid = (await new_tenant(client))["id"]
        n = 2000
        vecs = clustered(n, seed=15)
        for start in range(0, n, 1000):
            await runtime.memories.add_many(
                uuid.UUID(tid),
                [
                    NewMemory(
                        f"row {i}",
                        Scope(user_id=f"u{i % 100}"),
                        metadata={"p1000": i % 1000, "p100": i % 100, "p10": i % 10, "p2": i % 2},
                        embedding=vecs[i].tolist(),
                    )
                    for i in range(start, start + 1000)
                ],
            )
        hot = runtime.hot_search
        t = hot.indexes.ready(uuid.UUID(tid))
        assert t is not None

        async def grown_into_hnsw() -> bool:
            return t.index.is_hnsw and not t.rebuilding

        await eventually(grown_into_hnsw, "the index grown into HNSW", deadline=60)
        queries = clustered(12, seed=16)
        cases = [
            ({"metadata.p1000": 3}, None, lambda i: i % 1000 == 3),  # 0.1%: 2 rows
            ({"metadata.p100": 3}, None, lambda i: i % 100 == 3),  # 1%
            ({"metadata.p10": {"$in": [3]}}, None, lambda i: i % 10 == 3),  # 10%
            ({"metadata.p2": 1}, None, lambda i: i % 2 == 1),  # 50%
            (None, Scope(user_id="u7"), lambda i: i % 100 == 7),  # a scope: 1%
            (None, None, lambda i: True),
        ]
        for flt, scope, match in cases:
            allowed = np.asarray([i for i in range(n) if match(i)])
            found = total = 0
            strategies = set()
            for q in queries:
                truth = allowed[np.argsort(-(vecs[allowed] @ q))[:10]]
                result = await runtime.search.search(
                    uuid.UUID(tid),
                    SearchRequest(embedding=q.tolist(), k=10, filter=flt, scope=scope or Scope()),
                )
                strategies.add(result.strategy)
                got = [int(hit.memory.content.split()[1]) for hit in result.results]
                assert len(got) == min(10, len(allowed)), (flt, scope, result.strategy)
                assert all(match(i) for i in got)
                found += len(set(got) & set(truth.tolist()))
                total += len(truth)
            assert found / total >= 0.99, (flt, scope, strategies, found / total)
            assert strategies <= {"faiss", "exact"}, strategies
    finally:
        await runtime.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(database_url: str, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "MEMORY_DATABASE_URL": database_url,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_EMBEDDING_MODEL": "hash:384",
        "MEMORY_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
        "MEMORY_FAISS_SNAPSHOT_INTERVAL_S": "0.3",
        "MEMORY_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port)]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the service did not become ready")


@pytest.mark.slow
def test_restart_after_kill_9_loses_nothing_and_keeps_deletes(
    database_url: str, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    vecs = unit_vectors(300, seed=17)
    process = start_service(database_url, tmp_path / "data", port, log)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            r = http.post("/v1/admin/tenants", json={"name": "restart"}, headers=ADMIN)
            h = {"Authorization": f"Bearer {r.json()['api_key']}"}
            items = [{"content": f"m {i}", "embedding": vecs[i].tolist()} for i in range(250)]
            ids = [
                m["id"]
                for m in http.post("/v1/memories/batch", json={"items": items}, headers=h).json()[
                    "items"
                ]
            ]
            time.sleep(1.0)  # a snapshot is written
            for i in range(250, 300):  # changes after the snapshot: replayed from the log
                r = http.post(
                    "/v1/memories",
                    json={"content": f"m {i}", "embedding": vecs[i].tolist()},
                    headers=h,
                )
                ids.append(r.json()["id"])
            deleted = set(range(0, 300, 7))
            for i in deleted:
                assert http.delete(f"/v1/memories/{ids[i]}", headers=h).status_code == 204
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = start_service(database_url, tmp_path / "data", port, log)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                body = http.post(
                    "/v1/memories/search", json={"embedding": vecs[1].tolist(), "k": 1}, headers=h
                ).json()
                if body["strategy"] == "faiss":
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            for i in range(300):
                body = http.post(
                    "/v1/memories/search", json={"embedding": vecs[i].tolist(), "k": 3}, headers=h
                ).json()
                assert body["strategy"] == "faiss"
                found = [hit["memory"]["id"] for hit in body["results"]]
                if i in deleted:
                    assert ids[i] not in found
                else:
                    assert found[0] == ids[i]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert "snapshot at change" in log.read_text(), "the restart should load the snapshot"


def test_the_planner_picks_paths_from_the_estimated_candidates() -> None:
    from memory_service.search import planner

    s = Settings(faiss_exact_max=20_000, faiss_post_filter_max=2000, faiss_ef_search=64)
    assert planner.first_plan(10, 10**6, filtered=False, settings=s).path == "faiss"
    first = planner.first_plan(10, 10**6, filtered=True, settings=s)
    assert first.path == "faiss" and first.fetch == 40
    # half the neighbours match: probe a little deeper
    assert planner.next_plan(10, 10**6, 40, 5, s).path == "faiss"
    # nothing matched among 40 of a small index: a few candidates, score them exactly
    assert planner.next_plan(10, 5000, 40, 0, s).path == "exact"
    # nothing matched deep into a huge index, too many candidates to score: pgvector
    assert planner.next_plan(10, 10**8, 2000, 0, s).path == "pgvector"


async def test_the_in_process_exact_pass_leaves_out_rows_that_expired(
    client: Any, tenant: dict[str, Any]
) -> None:
    """An equality filter is decided by the posting lists alone; expiry still applies."""
    h = tenant["headers"]
    vecs = unit_vectors(40, seed=21)
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    items = [
        {
            "content": f"row {i}",
            "embedding": v.tolist(),
            "metadata": {"group": i % 4},
            **({"expires_at": soon} if i % 8 == 0 else {}),
        }
        for i, v in enumerate(vecs)
    ]
    r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert r.status_code == 201, r.text
    await search(client, h, vecs[0], k=10, filter={"metadata.group": 0})  # learns the share
    before = await search(client, h, vecs[0], k=10, filter={"metadata.group": 0})
    assert before["strategy"] == "exact"
    assert {hit["memory"]["content"] for hit in before["results"]} == {
        f"row {i}" for i in range(0, 40, 4)
    }
    await asyncio.sleep(2.0)
    after = await search(client, h, vecs[0], k=10, filter={"metadata.group": 0})
    assert after["strategy"] == "exact"
    assert {hit["memory"]["content"] for hit in after["results"]} == {
        f"row {i}" for i in range(0, 40, 4) if i % 8
    }
