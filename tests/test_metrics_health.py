"""Metrics, health score and tracing, through a real app with an in-memory span exporter."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import ADMIN, assert_problem, new_tenant
from litestar.testing import AsyncTestClient
from live_http import in_app_loop
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder

SECRET_CONTENT = "the launch code is swordfish"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
async def traced(
    settings: Settings, database_url: str, exporter: InMemorySpanExporter
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(
        settings.with_(database_url=database_url),
        embedder=HashEmbedder(384),
        span_exporter=exporter,
    )
    async with AsyncTestClient(app=app, timeout=30) as c:
        yield c


async def test_prometheus_exposition_uses_route_templates(traced: Any) -> None:
    tenant = await new_tenant(traced)
    h = tenant["headers"]
    task = (await traced.post("/v1/tasks", json={"title": "m"}, headers=h)).json()
    await traced.get(f"/v1/tasks/{task['id']}", headers=h)
    await traced.post("/v1/memories", json={"content": "metrics please"}, headers=h)
    response = await traced.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(
        r'memory_http_requests_total\{method="GET",route="/v1/tasks/\{task_id\}"'
        r',status="200"\} [1-9]',
        text,
    ), text
    assert "memory_http_request_duration_seconds_bucket" in text
    assert 'memory_circuit_state{dependency="database"} 0.0' in text
    assert 'memory_circuit_state{dependency="embedder"} 0.0' in text
    assert 'memory_db_pool_connections{state="size"}' in text
    assert "memory_embedding_batch_duration_seconds_count" in text
    assert "memory_embedding_cache_total" in text
    for private in (task["id"], tenant["id"], tenant["api_key"], "metrics please"):
        assert private not in text


async def test_summary_per_operation(traced: Any) -> None:
    h = (await new_tenant(traced))["headers"]
    for _ in range(5):
        await traced.get("/v1/tasks", headers=h)
    await traced.get(f"/v1/tasks/{uuid.uuid4()}", headers=h)
    r = await traced.get("/v1/metrics/summary", params={"window": "15m"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["window_seconds"] == 900
    ops = {o["operation"]: o for o in body["operations"]}
    listing = ops["GET /v1/tasks"]
    assert listing["count"] >= 5 and listing["error_rate"] == 0
    assert 0 < listing["p50_ms"] <= listing["p95_ms"] <= listing["p99_ms"]
    assert ops["GET /v1/tasks/{task_id}"]["client_errors"] >= 1
    # a tenant sees only its own requests; the admin sees every tenant's
    other = (await new_tenant(traced))["headers"]
    theirs = (await traced.get("/v1/metrics/summary", headers=other)).json()["operations"]
    assert "GET /v1/tasks" not in {o["operation"] for o in theirs}
    everyone = await traced.get("/v1/admin/metrics/summary", headers=ADMIN)
    assert everyone.status_code == 200, everyone.text
    all_ops = {o["operation"]: o for o in everyone.json()["operations"]}
    assert all_ops["GET /v1/tasks"]["count"] >= listing["count"]
    assert "POST /v1/admin/tenants" in all_ops
    for bad in ("15", "2h", "0m", "x"):
        assert_problem(
            await traced.get("/v1/metrics/summary", params={"window": bad}, headers=h), 422
        )
    assert_problem(await traced.get("/v1/metrics/summary"), 401)


async def test_health_score_explains_deductions(traced: Any) -> None:
    h = (await new_tenant(traced))["headers"]
    r = await traced.get("/v1/health/score", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["score"] <= 100
    names = {c["name"]: c for c in body["components"]}
    assert names["database"]["status"] == "ok"
    assert {"error_rate", "latency", "circuit.database", "circuit.embedder"} <= set(names)
    runtime = traced.app.state.runtime
    # an index that reports it trails the database by ten minutes costs points, with a reason
    runtime.index_status["probe"] = lambda: {"size": 3, "lag_seconds": 600, "backlog": 7}
    try:
        lagging = (await traced.get("/v1/health/score", headers=h)).json()
        assert lagging["score"] < body["score"] or body["score"] == 0
        assert any("index probe trails" in reason for reason in lagging["reasons"])
        metrics = (await traced.get("/metrics")).text
        assert 'memory_index_lag_seconds{index="probe"} 600.0' in metrics
        assert 'memory_index_backlog{index="probe"} 7.0' in metrics
        assert 'memory_index_backlog{index="pgvector"}' in metrics  # the graph's worker
    finally:
        del runtime.index_status["probe"]


async def test_spans_for_requests_database_embedding_and_search(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    h = (await new_tenant(traced))["headers"]
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    exporter.clear()
    added = await traced.post(
        "/v1/memories", json={"content": SECRET_CONTENT}, headers={**h, "traceparent": parent}
    )
    assert added.status_code == 201, added.text
    searched = await traced.post(
        "/v1/memories/search",
        json={"query": SECRET_CONTENT, "k": 1},
        headers={**h, "traceparent": parent},
    )
    assert searched.status_code == 200
    missing = await traced.get(f"/v1/tasks/{uuid.uuid4()}", headers={**h, "traceparent": parent})
    assert assert_problem(missing, 404)["trace_id"] == trace_id
    spans = [
        s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id
    ]
    names = [s.name for s in spans]
    assert any((s.attributes or {}).get("db.system") == "postgresql" for s in spans), names
    assert "embedding.batch" in names and "memory.search" in names
    assert any(n.startswith("POST /v1/memories") for n in names)
    for span in exporter.get_finished_spans():
        for value in (span.attributes or {}).values():
            assert "swordfish" not in str(value), span.name


async def test_tracing_and_search_events_off(settings: Settings, database_url: str) -> None:
    app = create_app(
        settings.with_(
            database_url=database_url, trace_exporter="off", record_search_events=False
        ),
        embedder=HashEmbedder(384),
    )
    async with AsyncTestClient(app=app, timeout=30) as client:
        h = (await new_tenant(client))["headers"]
        trace_id = uuid.uuid4().hex
        parent = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
        added = await client.post("/v1/memories", json={"content": "tea at four"}, headers=h)
        assert added.status_code == 201, added.text
        found = await client.post(
            "/v1/memories/search", json={"query": "tea", "k": 1}, headers={**h, **parent}
        )
        assert found.status_code == 200 and len(found.json()["results"]) == 1
        # no request span: the caller's trace is not joined, yet a problem still has an id
        missing = await client.get(f"/v1/tasks/{uuid.uuid4()}", headers={**h, **parent})
        problem = assert_problem(missing, 404)
        assert re.fullmatch(r"[0-9a-f]{32}", problem["trace_id"])
        assert problem["trace_id"] != trace_id
        # the search left no event; the write still did
        assert await in_app_loop(client, app.state.runtime.event_writer.flush)
        events = (await client.get("/v1/events", params={"limit": 100}, headers=h)).json()
        types = {e["type"] for e in events["items"]}
        assert "memory.added" in types and "memory.searched" not in types


def test_search_spans_are_skipped_only_where_nothing_records() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from memory_service.infra.telemetry import build_tracer_provider, records_spans

    assert not records_spans(trace.NoOpTracerProvider())  # MEMORY_TRACE_EXPORTER=off
    assert not records_spans(build_tracer_provider(Settings(trace_exporter="none")))
    assert records_spans(build_tracer_provider(Settings(trace_exporter="console")))
    assert records_spans(build_tracer_provider(Settings(), InMemorySpanExporter()))
    assert records_spans(TracerProvider())
    assert records_spans(None)  # the global provider, whatever is installed later
