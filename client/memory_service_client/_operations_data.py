"""The change feed, export and import, and browser-storage migrations as call builders.

Query parameters and bodies pass through as given (see the service's OpenAPI
document for their fields); ``memory_service_client.sync`` and ``.replica`` build
on the change feed.
"""

from __future__ import annotations

from typing import Any

from memory_service_client._core import Call, operation, query, segment


@operation("GET", "/v1/changes")
def list_changes(**params: Any) -> Call:
    return Call("GET", "/v1/changes", query(**params))


@operation("GET", "/v1/changes/snapshot")
def changes_snapshot(**params: Any) -> Call:
    return Call("GET", "/v1/changes/snapshot", query(**params))


@operation("GET", "/v1/changes/stream")
def stream_changes(**params: Any) -> Call:
    return Call("GET", "/v1/changes/stream", query(**params))


@operation("GET", "/v1/export")
def export_data(**params: Any) -> Call:
    """The tenant's export, as the text the service sends."""
    return Call("GET", "/v1/export", query(**params), result="text")


@operation("POST", "/v1/import")
def import_data(payload: Any, **params: Any) -> Call:
    return Call("POST", "/v1/import", query(**params), json=payload)


@operation("POST", "/v1/migrations/browser-storage")
def migrate_browser_storage(payload: dict[str, Any]) -> Call:
    return Call("POST", "/v1/migrations/browser-storage", json=payload)


@operation("GET", "/v1/migrations/{migration_id}")
def get_migration(migration_id: str) -> Call:
    return Call("GET", f"/v1/migrations/{segment(migration_id)}")


@operation("POST", "/v1/migrations/{migration_id}/rollback")
def rollback_migration(migration_id: str) -> Call:
    return Call("POST", f"/v1/migrations/{segment(migration_id)}/rollback")
