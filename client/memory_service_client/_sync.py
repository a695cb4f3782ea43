"""``MemoryClient``: the blocking client, one method per operation of the HTTP API.

Each method builds its call with ``_operations`` and sends it through ``_send``,
which applies the retry policy and turns error answers into typed exceptions.
``iter_*`` methods follow the cursors of a listing; ``stream_events`` returns a
resumable Server-Sent Events iterator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx

from memory_service_client import _operations as ops
from memory_service_client import _operations_data as do
from memory_service_client._core import (
    OPERATIONS,
    Call,
    Operation,
    RetryPolicy,
    auth_headers,
    build_request,
    decode,
)
from memory_service_client._exceptions import wrap_transport
from memory_service_client._sse import EventStream
from memory_service_client._sync_runs import RunMethods
from memory_service_client._types import (
    Deleted,
    Environment,
    Event,
    Health,
    HistoryEntry,
    Items,
    KeyCreated,
    Memory,
    NamespaceInfo,
    Page,
    RetrievalSettings,
    SearchResponse,
    Task,
    TenantCreated,
)

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class MemoryClient(RunMethods):
    """A blocking client. ``api_key`` for the tenant API, ``admin_token`` for /v1/admin."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._admin_token = admin_token
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=auth_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> MemoryClient:
        """From MEMORY_SERVICE_URL, MEMORY_API_KEY and MEMORY_ADMIN_TOKEN."""
        return cls(
            os.environ.get("MEMORY_SERVICE_URL", "http://127.0.0.1:8080"),
            os.environ.get("MEMORY_API_KEY"),
            admin_token=os.environ.get("MEMORY_ADMIN_TOKEN"),
            **kwargs,
        )

    def with_api_key(self, api_key: str) -> MemoryClient:
        """A client for another tenant's key, with the same settings."""
        return MemoryClient(
            self.base_url,
            api_key,
            admin_token=self._admin_token,
            timeout=self._http.timeout,
            retry=self.retry,
            transport=self._http._transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            request = build_request(self._http, call, self._admin_token)
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                if not self.retry.should_retry(call, attempt, None):
                    raise wrap_transport(exc) from exc
                wait = self.retry.delay(attempt, None)
            else:
                if response.status_code < 400 or not self.retry.should_retry(
                    call, attempt, response.status_code
                ):
                    return decode(call, response)
                wait = self.retry.delay(attempt, response)
                if wait is None:
                    return decode(call, response)
            time.sleep(wait or 0.0)
            attempt += 1

    def _iterate(self, page: Callable[[str | None], Call]) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            body = self._send(page(cursor))
            yield from body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return

    @staticmethod
    def operations() -> dict[str, Operation]:
        """Every registered operation by method name (what this client covers)."""
        return dict(OPERATIONS)

    # -- service -------------------------------------------------------------------------
    def health(self) -> Health:
        return self._send(ops.health())

    def ready(self) -> Health:
        return self._send(ops.ready())

    def prometheus_metrics(self) -> str:
        return self._send(ops.prometheus_metrics())

    def metrics_summary(self, window: str = "15m") -> dict[str, Any]:
        return self._send(ops.metrics_summary(window))

    def health_score(self) -> dict[str, Any]:
        return self._send(ops.health_score())

    # -- admin ---------------------------------------------------------------------------
    def create_tenant(self, name: str) -> TenantCreated:
        return self._send(ops.create_tenant(name))

    def create_api_key(self, tenant_id: str) -> KeyCreated:
        return self._send(ops.create_api_key(tenant_id))

    def revoke_api_key(self, tenant_id: str, key_prefix: str) -> None:
        self._send(ops.revoke_api_key(tenant_id, key_prefix))

    def admin_metrics_summary(self, window: str = "15m") -> dict[str, Any]:
        return self._send(ops.admin_metrics_summary(window))

    # -- memories ------------------------------------------------------------------------
    def add_memory(self, content: str, **fields: Any) -> Memory:
        return self._send(ops.add_memory(content, **fields))

    def add_memories(self, items: list[dict[str, Any]]) -> Items[Memory]:
        return self._send(ops.add_memories(items))

    def import_memories(self, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Items as NDJSON lines: counts, and the line number and reason of each bad line."""
        result: dict[str, Any] = self._send(ops.import_memories(items))
        return result

    def search(self, query: str | None = None, **fields: Any) -> SearchResponse:
        return self._send(ops.search(query, **fields))

    def list_memories(self, **params: Any) -> Page[Memory]:
        return self._send(ops.list_memories(**params))

    def iter_memories(self, *, page_size: int = 200, **params: Any) -> Iterator[Memory]:
        return self._iterate(
            lambda cursor: ops.list_memories(limit=page_size, cursor=cursor, **params)
        )

    def delete_memories(self, **scope: Any) -> Deleted:
        return self._send(ops.delete_memories(**scope))

    def get_memory(
        self, memory_id: str, *, include_embedding: bool = False, as_of: str | None = None
    ) -> Memory:
        return self._send(
            ops.get_memory(memory_id, include_embedding=include_embedding, as_of=as_of)
        )

    def update_memory(self, memory_id: str, *, if_match: int | None = None, **changes: Any) -> Memory:
        return self._send(ops.update_memory(memory_id, if_match=if_match, **changes))

    def delete_memory(self, memory_id: str) -> None:
        self._send(ops.delete_memory(memory_id))

    def memory_history(self, memory_id: str) -> Items[HistoryEntry]:
        return self._send(ops.memory_history(memory_id))

    def put_memory_by_key(self, namespace: str, key: str, content: str, **fields: Any) -> Memory:
        return self._send(ops.put_memory_by_key(namespace, key, content, **fields))

    def get_memory_by_key(self, namespace: str, key: str, *, include_embedding: bool = False) -> Memory:
        return self._send(
            ops.get_memory_by_key(namespace, key, include_embedding=include_embedding)
        )

    def delete_memory_by_key(self, namespace: str, key: str) -> None:
        self._send(ops.delete_memory_by_key(namespace, key))

    def list_namespaces(self, **params: Any) -> Page[NamespaceInfo]:
        return self._send(ops.list_namespaces(**params))

    def iter_namespaces(self, *, page_size: int = 200, **params: Any) -> Iterator[NamespaceInfo]:
        return self._iterate(
            lambda cursor: ops.list_namespaces(limit=page_size, cursor=cursor, **params)
        )

    def get_settings(self) -> RetrievalSettings:
        return self._send(ops.get_settings())

    def put_settings(self, dedupe: bool, dedupe_threshold: float | None = None) -> RetrievalSettings:
        return self._send(ops.put_settings(dedupe, dedupe_threshold))

    # -- tasks ---------------------------------------------------------------------------
    def create_task(self, title: str, **fields: Any) -> Task:
        return self._send(ops.create_task(title, **fields))

    def list_tasks(self, **params: Any) -> Page[Task]:
        return self._send(ops.list_tasks(**params))

    def iter_tasks(self, *, page_size: int = 200, **filters: Any) -> Iterator[Task]:
        return self._iterate(lambda cursor: ops.list_tasks(limit=page_size, cursor=cursor, **filters))

    def get_task(self, task_id: str) -> Task:
        return self._send(ops.get_task(task_id))

    def update_task(self, task_id: str, *, if_match: int | None = None, **changes: Any) -> Task:
        return self._send(ops.update_task(task_id, if_match=if_match, **changes))

    def reopen_task(self, task_id: str, *, if_match: int | None = None) -> Task:
        return self._send(ops.reopen_task(task_id, if_match=if_match))

    def delete_task(self, task_id: str) -> None:
        self._send(ops.delete_task(task_id))

    # -- environments --------------------------------------------------------------------
    def create_environment(self, name: str, **fields: Any) -> Environment:
        return self._send(ops.create_environment(name, **fields))

    def list_environments(self, **params: Any) -> Page[Environment]:
        return self._send(ops.list_environments(**params))

    def iter_environments(self, *, page_size: int = 200) -> Iterator[Environment]:
        return self._iterate(lambda cursor: ops.list_environments(limit=page_size, cursor=cursor))

    def get_environment(self, environment_id: str) -> Environment:
        return self._send(ops.get_environment(environment_id))

    def update_environment(
        self, environment_id: str, *, if_match: int | None = None, **changes: Any
    ) -> Environment:
        return self._send(ops.update_environment(environment_id, if_match=if_match, **changes))

    def delete_environment(self, environment_id: str) -> None:
        self._send(ops.delete_environment(environment_id))

    # -- events --------------------------------------------------------------------------
    def record_events(self, items: list[dict[str, Any]]) -> Items[Event]:
        return self._send(ops.record_events(items))

    def list_events(self, **params: Any) -> Page[Event]:
        return self._send(ops.list_events(**params))

    def iter_events(self, *, page_size: int = 500, **filters: Any) -> Iterator[Event]:
        return self._iterate(
            lambda cursor: ops.list_events(limit=page_size, cursor=cursor, **filters)
        )

    def stream_events(
        self, *, last_event_id: str | None = None, read_timeout: float | None = 60.0, **filters: Any
    ) -> EventStream:
        """Live events; iterate it, ``close()`` it to stop. Resumes after a drop."""
        return EventStream(
            self._http, ops.stream_events(**filters), self.retry, last_event_id, read_timeout
        )

    # -- change feed, export/import, browser-storage migrations ----------------------

    def list_changes(self, **params: Any) -> Any:
        return self._send(do.list_changes(**params))

    def changes_snapshot(self, **params: Any) -> Any:
        return self._send(do.changes_snapshot(**params))

    def export_data(self, **params: Any) -> Any:
        return self._send(do.export_data(**params))

    def import_data(self, payload: Any, **params: Any) -> Any:
        return self._send(do.import_data(payload, **params))

    def migrate_browser_storage(self, payload: dict[str, Any]) -> Any:
        return self._send(do.migrate_browser_storage(payload))

    def get_migration(self, migration_id: str) -> Any:
        return self._send(do.get_migration(migration_id))

    def rollback_migration(self, migration_id: str) -> Any:
        return self._send(do.rollback_migration(migration_id))

    def stream_changes(
        self, *, last_event_id: str | None = None, read_timeout: float | None = 60.0, **params: Any
    ) -> EventStream:
        return EventStream(
            self._http, do.stream_changes(**params), self.retry, last_event_id, read_timeout
        )
