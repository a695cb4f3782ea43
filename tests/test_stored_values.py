"""No value that can be stored can break a read.

Metadata (and every JSON the service stores and compares) is refused with a 422 naming
its path, before anything is written, when PostgreSQL's ``jsonb`` or the search indexes
could not hold or compare it: an integer beyond ±2**53, NaN or Infinity, a NUL
character, nesting past the limit. A row that holds such a value anyway (stored by an
older version, or by SQL) is skipped by the posting lists, logged and counted, and still
found: searches answer 200, with filters and with ``"consistency": "strong"``.
``test_stored_values_property`` throws arbitrary JSON at every write path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from indexers.keyword_index import KeywordIndex
from memory_service.config import Settings
from memory_service.embedding.embeddings import Embedder
from memory_service.memories.models import Memory, Scope
from memory_service.search.postings import Postings
from memory_service.search.tenant import TenantIndex, index_text
from memory_service.validation import MAX_SAFE_INTEGER, json_problem
from tests.conftest import assert_problem, new_tenant
from tests.helpers import db_rows, page_all, unit_vectors
from tests.stored_values_support import HUGE, JSON_HEADERS, NDJSON, import_stream


@pytest.fixture(scope="module")
def hash_settings(settings: Settings, database_url: str, tmp_path_factory: Any) -> Settings:
    """The session's database, a data directory of its own, the deterministic embedder's
    app: the model is beside the point here."""
    return settings.with_(database_url=database_url, data_dir=str(tmp_path_factory.mktemp("values")))


@pytest.fixture(scope="module")
async def hashed(hash_settings: Settings, hash_embedder: Embedder) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(hash_settings, embedder=hash_embedder), timeout=60) as c:
        yield c


async def export_header(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/v1/export", params={"types": "memories"}, headers=headers)
    assert r.status_code == 200, r.text
    header = json.loads(r.text.splitlines()[0])
    return {**header, "model": {"name": "elsewhere", "dimension": 384}}  # embedded again here


# -- every entry point refuses what cannot be held, naming the path, before any write ------
async def test_every_memory_write_path_refuses_a_huge_integer_naming_its_path(hashed: Any) -> None:
    tenant = await new_tenant(hashed)
    h = tenant["headers"]
    bad = {"a": {"b": [0, 1, 2, HUGE]}}

    r = await hashed.post("/v1/memories", json={"content": "x", "metadata": bad}, headers=h)
    assert assert_problem(r, 422)["errors"][0]["field"] == "metadata.a.b[3]"

    items = [{"content": "fine", "user_id": "batch"}, {"content": "x", "metadata": bad}]
    r = await hashed.post("/v1/memories/batch", json={"items": items}, headers=h)
    assert assert_problem(r, 422)["errors"][0]["field"] == "items[1].metadata.a.b[3]"

    r = await hashed.put("/v1/memories/by-key/ns/k1", json={"content": "x", "metadata": bad}, headers=h)
    assert assert_problem(r, 422)["errors"][0]["field"] == "metadata.a.b[3]"

    r = await hashed.post("/v1/memories", json={"content": "kept", "metadata": {"a": 1}}, headers=h)
    kept = r.json()
    r = await hashed.patch(f"/v1/memories/{kept['id']}", json={"metadata": bad}, headers=h)
    assert assert_problem(r, 422)["errors"][0]["field"] == "metadata.a.b[3]"

    line = json.dumps({"content": "x", "user_id": "batch", "metadata": bad})
    r = await hashed.post("/v1/memories/import", content=line.encode(), headers={**h, **NDJSON})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 0 and "metadata.a.b[3]" in r.json()["errors"][0]["reason"]

    header = await export_header(hashed, h)
    r = await hashed.post("/v1/import", content=import_stream(header, bad), headers={**h, **NDJSON})
    assert_problem(r, 422, mentions="metadata.a.b[3]")
    change = {"event": "UPDATE", "old_content": "x", "new_content": "x", "old_metadata": {"k": "\u0000"},
              "new_metadata": {}, "at": "2026-01-01T00:00:00Z", "version": 2}  # fmt: skip
    stream = import_stream(header, {}, history=[change])
    r = await hashed.post("/v1/import", content=stream, headers={**h, **NDJSON})
    assert_problem(r, 422, mentions="history[0].old_metadata.k")

    # nothing was written by any of them; the one memory that was is as it was
    assert [m["id"] for m in await page_all(hashed, h, {})] == [kept["id"]]
    assert (await hashed.get(f"/v1/memories/{kept['id']}", headers=h)).json()["metadata"] == {"a": 1}


async def test_a_workflow_output_that_would_become_a_memory_is_refused(hashed: Any) -> None:
    h = (await new_tenant(hashed))["headers"]
    flow = {
        "steps": [
            {"id": "make", "kind": "task", "queue": "values"},
            {"id": "keep", "kind": "memory.add", "depends_on": ["make"],
             "input": {"content": "from a worker", "metadata": {"$ref": "steps.make.output.meta"}}},
        ]
    }  # fmt: skip
    name = f"wf-{uuid.uuid4().hex[:8]}"
    assert (await hashed.put(f"/v1/workflows/{name}", json=flow, headers=h)).status_code == 201
    run = await hashed.post(f"/v1/workflows/{name}/runs", json={"input": {}}, headers=h)
    assert run.status_code in (200, 201), run.text
    claimed = await hashed.post(
        "/v1/workers/claim", json={"worker_id": "w", "queues": ["values"], "wait_s": 5}, headers=h
    )
    [attempt] = claimed.json()["items"]
    r = await hashed.post(
        f"/v1/workers/attempts/{attempt['id']}/complete",
        json={"lease_token": attempt["lease_token"], "output": {"meta": {"n": -HUGE}}},
        headers=h,
    )
    assert assert_problem(r, 422)["errors"][0]["field"] == "output.meta.n"
    assert await page_all(hashed, h, {}) == []


async def test_the_browser_storage_migration_refuses_a_huge_integer(hashed: Any) -> None:
    h = (await new_tenant(hashed))["headers"]
    store = {"state": {"memories": [{"id": "m-1", "content": "x", "metadata": {"a": [HUGE]}}]}, "version": 1}
    doc = {"platform-memories": json.dumps(store)}
    r = await hashed.post("/v1/migrations/browser-storage", json=doc, headers=h)
    assert r.status_code == 422, r.text
    assert "metadata.a[0]" in r.text
    assert await page_all(hashed, h, {}) == []


@pytest.mark.parametrize(
    ("raw", "field", "status"),
    [
        ('{"a": NaN}', "body", 400),  # not JSON: refused by the decoder
        ('{"a": 1e999}', "metadata", 400),
        ('{"a": "x\\u0000y"}', "metadata.a", 422),
        ('{"k\\u0000": 1}', "metadata", 422),
        (json.dumps({"n": MAX_SAFE_INTEGER + 1}), "metadata.n", 422),
        (json.dumps({"n": -MAX_SAFE_INTEGER - 1}), "metadata.n", 422),
        ("[" * 40 + "]" * 40, "body", 400),
    ],
)
async def test_hostile_metadata_is_a_4xx_naming_the_field(
    hashed: Any, raw: str, field: str, status: int
) -> None:
    h = (await new_tenant(hashed))["headers"]
    content = '{"content": "x", "metadata": ' + raw + "}"
    r = await hashed.post("/v1/memories", content=content.encode(), headers={**h, **JSON_HEADERS})
    problem = assert_problem(r, status)
    assert problem["errors"][0]["field"].startswith(field), problem


async def test_what_a_double_holds_exactly_is_stored_and_found(hashed: Any) -> None:
    h = (await new_tenant(hashed))["headers"]
    metadata = {
        "big": MAX_SAFE_INTEGER, "small": -MAX_SAFE_INTEGER, "tiny": 5e-324, "max": 1.7976931348623157e308,
        "": "an empty key", "k" * 1000: "a long key", "deep": json.loads("[" * 30 + "]" * 30),
        "text": "unicode \u2028 \U0001f600",
    }  # fmt: skip
    r = await hashed.post("/v1/memories", json={"content": "edges", "metadata": metadata}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == metadata
    for flt in ({"metadata.big": MAX_SAFE_INTEGER}, {"metadata.tiny": {"$gt": 0}}):
        for consistency in ("eventual", "strong"):
            found = await hashed.post(
                "/v1/memories/search",
                json={"query": "edges", "filter": flt, "consistency": consistency},
                headers=h,
            )
            assert found.status_code == 200, found.text
            assert [x["memory"]["id"] for x in found.json()["results"]] == [r.json()["id"]]


async def test_a_filter_operand_the_indexes_cannot_compare_is_a_422(hashed: Any) -> None:
    h = (await new_tenant(hashed))["headers"]
    for flt in ({"metadata.a": HUGE}, {"importance": {"$gt": HUGE}}, {"metadata.a": {"$in": [1, HUGE]}}):
        r = await hashed.post("/v1/memories/search", json={"query": "x", "filter": flt}, headers=h)
        assert_problem(r, 422, mentions="2**53")


def test_json_problem_walks_any_depth_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_problem(deep, "metadata") == (
        "metadata" + "[0]" * 32,
        "nested deeper than 32 levels",
    )
    assert json_problem({"a": [1.5, math.inf]}, "m") == ("m.a[1]", "NaN and Infinity are not JSON numbers")
    assert json_problem({"a": {("k" * 100): HUGE}}, "m")[0] == "m.a." + "k" * 64 + "…"  # type: ignore[index]
    assert json_problem({"a": [True, None, "x", 2**53, -(2**53), 0.0]}, "m") is None


# -- a row stored before the rule (or by SQL) breaks no read --------------------------------
def insert_by_sql(database_url: str, tenant_id: str, content: str, metadata: str, vector: Any) -> str:
    """A row as an older version (or a hand-written statement) could have stored it."""
    digest = hashlib.sha256(content.encode()).digest()
    [(memory_id,)] = db_rows(
        database_url,
        "INSERT INTO memories (tenant_id, content, content_hash, user_id, metadata, embedding)"
        " VALUES (%s, %s, %s, 'u', %s::jsonb, %s) RETURNING id",
        tenant_id, content, digest, metadata, vector,
    )  # fmt: skip
    return str(memory_id)


async def searches(client: Any, h: dict[str, str], vector: Any) -> list[dict[str, Any]]:
    """Every kind of search of the tenant, each of which must answer 200."""
    requests = [
        {"embedding": vector.tolist(), "mode": "vector", "consistency": "strong"},
        {"embedding": vector.tolist(), "mode": "vector", "filter": {"metadata.topic": "t"}},
        {"embedding": vector.tolist(), "mode": "vector", "filter": {"metadata.n": {"$gte": 0}}},
        {"embedding": vector.tolist(), "filter": {"metadata.topic": "t"}, "consistency": "strong"},
        {"query": "poisoned row", "mode": "keyword"},
        {"query": "poisoned row", "mode": "keyword", "filter": {"metadata.topic": "t"}},
        {"query": "poisoned row", "mode": "hybrid", "consistency": "strong"},
        {"query": "poisoned row", "filter": {"metadata.topic": {"$in": ["t", "u"]}}},
        # string ordering depends on the collation: SQL decides these, also for held tenants
        {"embedding": vector.tolist(), "filter": {"metadata.big": {"$gt": 0.5}, "metadata.topic": {"$gte": "t"}}},
        {"query": "poisoned row", "mode": "keyword", "filter": {"metadata.big": {"$gt": 0.5}, "metadata.topic": {"$gte": "t"}}},
    ]
    out = []
    for request in requests:
        r = await client.post("/v1/memories/search", json={"k": 10, **request}, headers=h)
        assert r.status_code == 200, (request, r.text)
        out.append(r.json())
    return out


async def test_a_poisoned_row_is_skipped_counted_and_still_found(
    hashed: Any, hash_settings: Settings, hash_embedder: Embedder, database_url: str, tmp_path: Path
) -> None:
    tenant = await new_tenant(hashed)
    h = tenant["headers"]
    vecs = unit_vectors(4, seed=62)
    for i in range(3):
        item = {"content": f"plain {i}", "user_id": "u", "metadata": {"topic": "t", "n": i},
                "embedding": vecs[i].tolist()}  # fmt: skip
        assert (await hashed.post("/v1/memories", json=item, headers=h)).status_code == 201
    poisoned = insert_by_sql(
        database_url, tenant["id"], "poisoned row", f'{{"topic": "t", "n": 7, "big": {HUGE}}}', vecs[3]
    )
    not_an_object = insert_by_sql(database_url, tenant["id"], "a row of null metadata", "null", vecs[2])

    # this process holds the tenant: the row arrives through the change log
    for answer in await searches(hashed, h, vecs[3]):
        assert poisoned in [x["memory"]["id"] for x in answer["results"]], answer

    # another process loads the tenant from the database with the row in it
    other = create_app(hash_settings.with_(data_dir=str(tmp_path)), embedder=hash_embedder)
    async with AsyncTestClient(app=other, timeout=60) as fresh:
        answers = await searches(fresh, h, vecs[3])
        for answer in answers:
            assert poisoned in [x["memory"]["id"] for x in answer["results"]], answer
        # answered in process (the posting lists give the row as a candidate), not by SQL
        assert {a["strategy"] for a in answers[:4]} <= {"exact", "faiss"}, answers
        assert answers[0]["results"][0]["memory"]["metadata"]["big"] == HUGE
        # the default ranking and a time in the query both read each candidate's time
        for query in ("null metadata", "null metadata from last week"):
            r = await fresh.post("/v1/memories/search", json={"query": query, "k": 10}, headers=h)
            assert r.status_code == 200, r.text
            assert not_an_object in [x["memory"]["id"] for x in r.json()["results"]], r.text
        metrics = (await fresh.get("/metrics")).text
        assert 'memory_index_rows_skipped_total{index="postings"} 1.0' in metrics, metrics

    # and one that holds no tenant in process: PostgreSQL answers every search
    sql_only = hash_settings.with_(data_dir=str(tmp_path / "sql"), faiss_enabled=False)
    async with AsyncTestClient(app=create_app(sql_only, embedder=hash_embedder), timeout=60) as plain:
        for answer in await searches(plain, h, vecs[3]):
            assert poisoned in [x["memory"]["id"] for x in answer["results"]], answer


def row(seq: int, metadata: dict[str, Any], content: str = "c") -> Memory:
    now = datetime.now(UTC)
    return Memory(str(seq), content, "u", None, None, None, metadata, 0.5, now, now, None, 1, seq=seq)


def test_a_row_the_keyword_index_refuses_is_left_out_counted_and_sends_keyword_search_to_sql() -> None:
    t = TenantIndex(uuid.uuid4(), keywords=KeywordIndex())
    # text PostgreSQL could never give back (a lone surrogate), as a real refusal of the index
    rows = [row(1, {}, "apples and pears"), row(2, {}, "bad \ud800 text"), row(3, {}, "more apples")]
    index_text(t, rows, set())
    assert t.keyword_skipped == {2} and t.skipped["keyword"] == 1
    assert sorted(seq for seq, _ in t.keywords.search("apples", 10)[0]) == [1, 3]  # type: ignore[union-attr]
    index_text(t, [row(2, {}, "good apples now")], set())  # the row changed: it is held again
    assert t.keyword_skipped == set()
    assert sorted(seq for seq, _ in t.keywords.search("apples", 10)[0]) == [1, 2, 3]  # type: ignore[union-attr]


async def test_a_workflow_search_that_meets_a_poisoned_row_fails_its_step_once(
    hashed: Any, database_url: str
) -> None:
    tenant = await new_tenant(hashed)
    h = tenant["headers"]
    insert_by_sql(database_url, tenant["id"], "poisoned row", f'{{"big": {HUGE}}}', unit_vectors(1, seed=9)[0])
    flow = {"steps": [{"id": "recall", "kind": "memory.search", "input": {"query": "poisoned row"}}]}
    name = f"wf-{uuid.uuid4().hex[:8]}"
    assert (await hashed.put(f"/v1/workflows/{name}", json=flow, headers=h)).status_code == 201
    run = (await hashed.post(f"/v1/workflows/{name}/runs", json={"input": {}}, headers=h)).json()
    for _ in range(200):
        state = (await hashed.get(f"/v1/workflow-runs/{run['id']}", headers=h)).json()
        if state["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert state["status"] == "failed", state
    [recall] = state["steps"]
    assert "output.results[0].metadata.big" in str(recall), recall


def test_posting_lists_keep_an_unkeyed_row_a_candidate_of_every_metadata_clause() -> None:
    postings = Postings()
    postings.add(row(1, {"a": 1}))
    postings.add(row(2, {"a": 2**53 + 1, "b": "x"}))
    assert postings.unposted == {2}
    assert postings.narrow(Scope(), {"metadata.a": 1}) == ({1, 2}, False)
    assert postings.narrow(Scope(), {"metadata.b": "x"}) == ({2}, False)
    assert postings.narrow(Scope(user_id="u"), {}) == ({1, 2}, True)
    postings.remove(row(2, {"a": 2**53 + 1, "b": "x"}))
    assert postings.unposted == set()
    assert postings.narrow(Scope(), {"metadata.a": 1}) == ({1}, True)
