"""The live OpenAPI document describes the whole public contract."""

from __future__ import annotations

from typing import Any

CONTRACT = {
    "/health": {"get"},
    "/ready": {"get"},
    "/v1/admin/tenants": {"post"},
    "/v1/admin/tenants/{tenant_id}/keys": {"post"},
    "/v1/admin/tenants/{tenant_id}/keys/{key_prefix}": {"delete"},
    "/v1/memories": {"get", "post", "delete"},
    "/v1/memories/batch": {"post"},
    "/v1/memories/search": {"post"},
    "/v1/memories/{memory_id}": {"get", "patch", "delete"},
    "/v1/memories/{memory_id}/history": {"get"},
    "/v1/tasks": {"get", "post"},
    "/v1/tasks/{task_id}": {"get", "patch", "delete"},
    "/v1/environments": {"get", "post"},
    "/v1/environments/{environment_id}": {"get", "patch", "delete"},
    "/v1/events": {"get", "post"},
    "/v1/events/stream": {"get"},
    "/v1/metrics/summary": {"get"},
    "/v1/health/score": {"get"},
    "/metrics": {"get"},
}


async def test_openapi_lists_every_contract_path(client: Any) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = {p.rstrip("/") or "/": {m for m in ops if m != "parameters"} for p, ops in doc["paths"].items()}
    for path, methods in CONTRACT.items():
        assert path in paths, f"{path} missing from the OpenAPI document"
        assert methods <= paths[path], (path, paths[path])
    assert doc["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    search = doc["paths"]["/v1/memories/search"]["post"]
    assert "requestBody" in search


async def test_interactive_page_is_served(client: Any) -> None:
    r = await client.get("/schema")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
