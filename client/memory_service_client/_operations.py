"""Every operation of the HTTP API as a call builder, registered by method and path.

Each builder takes the operation's arguments and returns a ``Call``; the
clients send it. To cover a new endpoint, add a builder here with
``@operation(METHOD, PATH)`` and a one-line method to each client; the OpenAPI
coverage test fails until both exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from memory_service_client._core import Call, body, operation, query, segment

# -- service ---------------------------------------------------------------------------


@operation("GET", "/health")
def health() -> Call:
    """200 while the process is up."""
    return Call("GET", "/health")


@operation("GET", "/ready")
def ready() -> Call:
    """The readiness checks; 503 (ServiceUnavailableError) until the database is ready."""
    return Call("GET", "/ready")


@operation("GET", "/metrics")
def prometheus_metrics() -> Call:
    """The Prometheus exposition text."""
    return Call("GET", "/metrics", result="text")


@operation("GET", "/v1/metrics/summary")
def metrics_summary(window: str = "15m") -> Call:
    return Call("GET", "/v1/metrics/summary", query(window=window))


@operation("GET", "/v1/health/score")
def health_score() -> Call:
    return Call("GET", "/v1/health/score")


# -- admin -----------------------------------------------------------------------------


@operation("POST", "/v1/admin/tenants", admin=True)
def create_tenant(name: str) -> Call:
    return Call("POST", "/v1/admin/tenants", json={"name": name})


@operation("POST", "/v1/admin/tenants/{tenant_id}/keys", admin=True)
def create_api_key(tenant_id: str) -> Call:
    return Call("POST", f"/v1/admin/tenants/{segment(tenant_id)}/keys")


@operation("DELETE", "/v1/admin/tenants/{tenant_id}/keys/{key_prefix}", admin=True)
def revoke_api_key(tenant_id: str, key_prefix: str) -> Call:
    path = f"/v1/admin/tenants/{segment(tenant_id)}/keys/{segment(key_prefix)}"
    return Call("DELETE", path, result="none")


@operation("GET", "/v1/admin/metrics/summary", admin=True)
def admin_metrics_summary(window: str = "15m") -> Call:
    return Call("GET", "/v1/admin/metrics/summary", query(window=window))


# -- memories --------------------------------------------------------------------------


def _if_match(version: int | None) -> dict[str, str] | None:
    return None if version is None else {"If-Match": str(version)}


@operation("POST", "/v1/memories")
def add_memory(content: str, **fields: Any) -> Call:
    """``fields``: user_id, agent_id, run_id, namespace, metadata, importance,
    expires_at, embedding, context, dedupe, dedupe_threshold."""
    return Call("POST", "/v1/memories", json=body(content=content, **fields))


@operation("POST", "/v1/memories/batch")
def add_memories(items: list[dict[str, Any]]) -> Call:
    return Call("POST", "/v1/memories/batch", json={"items": items})


@operation("POST", "/v1/memories/import")
def import_memories(items: Iterable[dict[str, Any]]) -> Call:
    """Send batch items as NDJSON; the service commits them 1,000 at a time and reports
    counts and each bad line."""
    lines = b"".join(json.dumps(item).encode() + b"\n" for item in items)
    headers = {"Content-Type": "application/x-ndjson"}
    return Call("POST", "/v1/memories/import", headers=headers, content=lines)


@operation("POST", "/v1/memories/search", idempotent=True)
def search(query_text: str | None = None, **fields: Any) -> Call:
    """``fields``: embedding, k, user_id, agent_id, run_id, namespace, filter, mode,
    min_score and the retrieval options (explain, recency_weight, ...)."""
    return Call("POST", "/v1/memories/search", json=body(query=query_text, **fields))


@operation("GET", "/v1/memories")
def list_memories(
    *, limit: int | None = None, cursor: str | None = None, filter: str | None = None, **scope: Any
) -> Call:
    return Call("GET", "/v1/memories", query(limit=limit, cursor=cursor, filter=filter, **scope))


@operation("DELETE", "/v1/memories")
def delete_memories(**scope: Any) -> Call:
    return Call("DELETE", "/v1/memories", query(**scope))


@operation("GET", "/v1/memories/{memory_id}")
def get_memory(
    memory_id: str, *, include_embedding: bool = False, as_of: str | None = None
) -> Call:
    """``as_of`` (RFC 3339): the memory as it stood then."""
    params = query(include="embedding" if include_embedding else None, as_of=as_of)
    return Call("GET", f"/v1/memories/{segment(memory_id)}", params)


@operation("PATCH", "/v1/memories/{memory_id}")
def update_memory(memory_id: str, *, if_match: int | None = None, **changes: Any) -> Call:
    """``changes``: content, metadata, importance, expires_at (None clears it)."""
    return Call(
        "PATCH", f"/v1/memories/{segment(memory_id)}", json=changes, headers=_if_match(if_match)
    )


@operation("DELETE", "/v1/memories/{memory_id}")
def delete_memory(memory_id: str) -> Call:
    return Call("DELETE", f"/v1/memories/{segment(memory_id)}", result="none")


@operation("GET", "/v1/memories/{memory_id}/history")
def memory_history(memory_id: str) -> Call:
    return Call("GET", f"/v1/memories/{segment(memory_id)}/history")


def _by_key(namespace: str, key: str) -> str:
    return f"/v1/memories/by-key/{segment(namespace)}/{segment(key)}"


@operation("PUT", "/v1/memories/by-key/{namespace}/{key}")
def put_memory_by_key(namespace: str, key: str, content: str, **fields: Any) -> Call:
    """Create or replace the memory named ``namespace``/``key``."""
    return Call("PUT", _by_key(namespace, key), json=body(content=content, **fields))


@operation("GET", "/v1/memories/by-key/{namespace}/{key}")
def get_memory_by_key(namespace: str, key: str, *, include_embedding: bool = False) -> Call:
    params = {"include": "embedding"} if include_embedding else None
    return Call("GET", _by_key(namespace, key), params)


@operation("DELETE", "/v1/memories/by-key/{namespace}/{key}")
def delete_memory_by_key(namespace: str, key: str) -> Call:
    return Call("DELETE", _by_key(namespace, key), result="none")


@operation("GET", "/v1/memories/namespaces")
def list_namespaces(
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    max_depth: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call:
    params = query(prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit, cursor=cursor)
    return Call("GET", "/v1/memories/namespaces", params)


@operation("GET", "/v1/settings")
def get_settings() -> Call:
    return Call("GET", "/v1/settings")


@operation("PUT", "/v1/settings")
def put_settings(dedupe: bool, dedupe_threshold: float | None = None) -> Call:
    return Call("PUT", "/v1/settings", json=body(dedupe=dedupe, dedupe_threshold=dedupe_threshold))


# -- tasks -----------------------------------------------------------------------------


@operation("POST", "/v1/tasks")
def create_task(title: str, **fields: Any) -> Call:
    return Call("POST", "/v1/tasks", json=body(title=title, **fields))


@operation("GET", "/v1/tasks")
def list_tasks(*, limit: int | None = None, cursor: str | None = None, **filters: Any) -> Call:
    """``filters``: status, priority, tag (lists allowed), environment_id, agent_id,
    q, created_after, created_before, sort."""
    return Call("GET", "/v1/tasks", query(limit=limit, cursor=cursor, **filters))


@operation("GET", "/v1/tasks/{task_id}")
def get_task(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{segment(task_id)}")


@operation("PATCH", "/v1/tasks/{task_id}")
def update_task(task_id: str, *, if_match: int | None = None, **changes: Any) -> Call:
    return Call("PATCH", f"/v1/tasks/{segment(task_id)}", json=changes, headers=_if_match(if_match))


@operation("POST", "/v1/tasks/{task_id}/reopen")
def reopen_task(task_id: str, *, if_match: int | None = None) -> Call:
    return Call("POST", f"/v1/tasks/{segment(task_id)}/reopen", headers=_if_match(if_match))


@operation("DELETE", "/v1/tasks/{task_id}")
def delete_task(task_id: str) -> Call:
    return Call("DELETE", f"/v1/tasks/{segment(task_id)}", result="none")


# -- environments ----------------------------------------------------------------------


@operation("POST", "/v1/environments")
def create_environment(name: str, **fields: Any) -> Call:
    return Call("POST", "/v1/environments", json=body(name=name, **fields))


@operation("GET", "/v1/environments")
def list_environments(*, limit: int | None = None, cursor: str | None = None) -> Call:
    return Call("GET", "/v1/environments", query(limit=limit, cursor=cursor))


@operation("GET", "/v1/environments/{environment_id}")
def get_environment(environment_id: str) -> Call:
    return Call("GET", f"/v1/environments/{segment(environment_id)}")


@operation("PATCH", "/v1/environments/{environment_id}")
def update_environment(environment_id: str, *, if_match: int | None = None, **changes: Any) -> Call:
    path = f"/v1/environments/{segment(environment_id)}"
    return Call("PATCH", path, json=changes, headers=_if_match(if_match))


@operation("DELETE", "/v1/environments/{environment_id}")
def delete_environment(environment_id: str) -> Call:
    return Call("DELETE", f"/v1/environments/{segment(environment_id)}", result="none")


# -- events ----------------------------------------------------------------------------


@operation("POST", "/v1/events")
def record_events(items: list[dict[str, Any]]) -> Call:
    return Call("POST", "/v1/events", json={"items": items})


@operation("GET", "/v1/events")
def list_events(*, limit: int | None = None, cursor: str | None = None, **filters: Any) -> Call:
    """``filters``: type (dotted prefixes, a list), min_severity, task_id,
    execution_id, agent_id, since, until."""
    return Call("GET", "/v1/events", query(limit=limit, cursor=cursor, **filters))


@operation("GET", "/v1/events/stream")
def stream_events(**filters: Any) -> Call:
    return Call("GET", "/v1/events/stream", query(**filters))
