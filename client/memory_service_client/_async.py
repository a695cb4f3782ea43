"""``AsyncMemoryClient``: the asyncio client, the twin of ``MemoryClient``.

Same operations, same names and arguments, awaited; ``iter_*`` methods are
async iterators and ``stream_events`` an async resumable event stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import httpx

from memory_service_client import _operations as ops
from memory_service_client import _operations_data as do
from memory_service_client._async_runs import AsyncRunMethods
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
from memory_service_client._sse import AsyncEventStream
from memory_service_client._sync import DEFAULT_TIMEOUT
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


class AsyncMemoryClient(AsyncRunMethods):
    """An asyncio client. ``api_key`` for the tenant API, ``admin_token`` for /v1/admin."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._admin_token = admin_token
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=auth_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncMemoryClient:
        """From MEMORY_SERVICE_URL, MEMORY_API_KEY and MEMORY_ADMIN_TOKEN."""
        return cls(
            os.environ.get("MEMORY_SERVICE_URL", "http://127.0.0.1:8080"),
            os.environ.get("MEMORY_API_KEY"),
            admin_token=os.environ.get("MEMORY_ADMIN_TOKEN"),
            **kwargs,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------
    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            request = build_request(self._http, call, self._admin_token)
            try:
                response = await self._http.send(request)
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
            await anyio.sleep(wait or 0.0)
            attempt += 1

    async def _iterate(self, page: Callable[[str | None], Call]) -> AsyncIterator[Any]:
        cursor: str | None = None
        while True:
            body = await self._send(page(cursor))
            for item in body["items"]:
                yield item
            cursor = body.get("next_cursor")
            if not cursor:
                return

    @staticmethod
    def operations() -> dict[str, Operation]:
        """Every registered operation by method name (what this client covers)."""
        return dict(OPERATIONS)

    # -- service -------------------------------------------------------------------------
    async def health(self) -> Health:
        return await self._send(ops.health())

    async def ready(self) -> Health:
        return await self._send(ops.ready())

    async def prometheus_metrics(self) -> str:
        return await self._send(ops.prometheus_metrics())

    async def metrics_summary(self, window: str = "15m") -> dict[str, Any]:
        return await self._send(ops.metrics_summary(window))

    async def health_score(self) -> dict[str, Any]:
        return await self._send(ops.health_score())

    # -- admin ---------------------------------------------------------------------------
    async def create_tenant(self, name: str) -> TenantCreated:
        return await self._send(ops.create_tenant(name))

    async def create_api_key(self, tenant_id: str) -> KeyCreated:
        return await self._send(ops.create_api_key(tenant_id))

    async def revoke_api_key(self, tenant_id: str, key_prefix: str) -> None:
        await self._send(ops.revoke_api_key(tenant_id, key_prefix))

    async def admin_metrics_summary(self, window: str = "15m") -> dict[str, Any]:
        return await self._send(ops.admin_metrics_summary(window))

    # -- memories ------------------------------------------------------------------------
    async def add_memory(self, content: str, **fields: Any) -> Memory:
        return await self._send(ops.add_memory(content, **fields))

    async def add_memories(self, items: list[dict[str, Any]]) -> Items[Memory]:
        return await self._send(ops.add_memories(items))

    async def import_memories(self, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Items as NDJSON lines: counts, and the line number and reason of each bad line."""
        result: dict[str, Any] = await self._send(ops.import_memories(items))
        return result

    async def search(self, query: str | None = None, **fields: Any) -> SearchResponse:
        return await self._send(ops.search(query, **fields))

    async def list_memories(self, **params: Any) -> Page[Memory]:
        return await self._send(ops.list_memories(**params))

    def iter_memories(self, *, page_size: int = 200, **params: Any) -> AsyncIterator[Memory]:
        return self._iterate(
            lambda cursor: ops.list_memories(limit=page_size, cursor=cursor, **params)
        )

    async def delete_memories(self, **scope: Any) -> Deleted:
        return await self._send(ops.delete_memories(**scope))

    async def get_memory(
        self, memory_id: str, *, include_embedding: bool = False, as_of: str | None = None
    ) -> Memory:
        return await self._send(
            ops.get_memory(memory_id, include_embedding=include_embedding, as_of=as_of)
        )

    async def update_memory(self, memory_id: str, *, if_match: int | None = None, **changes: Any) -> Memory:
        return await self._send(ops.update_memory(memory_id, if_match=if_match, **changes))

    async def delete_memory(self, memory_id: str) -> None:
        await self._send(ops.delete_memory(memory_id))

    async def memory_history(self, memory_id: str) -> Items[HistoryEntry]:
        return await self._send(ops.memory_history(memory_id))

    async def put_memory_by_key(self, namespace: str, key: str, content: str, **fields: Any) -> Memory:
        return await self._send(ops.put_memory_by_key(namespace, key, content, **fields))

    async def get_memory_by_key(self, namespace: str, key: str, *, include_embedding: bool = False) -> Memory:
        return await self._send(
            ops.get_memory_by_key(namespace, key, include_embedding=include_embedding)
        )

    async def delete_memory_by_key(self, namespace: str, key: str) -> None:
        await self._send(ops.delete_memory_by_key(namespace, key))

    async def list_namespaces(self, **params: Any) -> Page[NamespaceInfo]:
        return await self._send(ops.list_namespaces(**params))

    def iter_namespaces(self, *, page_size: int = 200, **params: Any) -> AsyncIterator[NamespaceInfo]:
        return self._iterate(
            lambda cursor: ops.list_namespaces(limit=page_size, cursor=cursor, **params)
        )

    async def get_settings(self) -> RetrievalSettings:
        return await self._send(ops.get_settings())

    async def put_settings(self, dedupe: bool, dedupe_threshold: float | None = None) -> RetrievalSettings:
        return await self._send(ops.put_settings(dedupe, dedupe_threshold))

    # -- tasks ---------------------------------------------------------------------------
    async def create_task(self, title: str, **fields: Any) -> Task:
        return await self._send(ops.create_task(title, **fields))

    async def list_tasks(self, **params: Any) -> Page[Task]:
        return await self._send(ops.list_tasks(**params))

    def iter_tasks(self, *, page_size: int = 200, **filters: Any) -> AsyncIterator[Task]:
        return self._iterate(lambda cursor: ops.list_tasks(limit=page_size, cursor=cursor, **filters))

    async def get_task(self, task_id: str) -> Task:
        return await self._send(ops.get_task(task_id))

    async def update_task(self, task_id: str, *, if_match: int | None = None, **changes: Any) -> Task:
        return await self._send(ops.update_task(task_id, if_match=if_match, **changes))

    async def reopen_task(self, task_id: str, *, if_match: int | None = None) -> Task:
        return await self._send(ops.reopen_task(task_id, if_match=if_match))

    async def delete_task(self, task_id: str) -> None:
        await self._send(ops.delete_task(task_id))

    # -- environments --------------------------------------------------------------------
    async def create_environment(self, name: str, **fields: Any) -> Environment:
        return await self._send(ops.create_environment(name, **fields))

    async def list_environments(self, **params: Any) -> Page[Environment]:
        return await self._send(ops.list_environments(**params))

    def iter_environments(self, *, page_size: int = 200) -> AsyncIterator[Environment]:
        return self._iterate(lambda cursor: ops.list_environments(limit=page_size, cursor=cursor))

    async def get_environment(self, environment_id: str) -> Environment:
        return await self._send(ops.get_environment(environment_id))

    async def update_environment(
        self, environment_id: str, *, if_match: int | None = None, **changes: Any
    ) -> Environment:
        return await self._send(ops.update_environment(environment_id, if_match=if_match, **changes))

    async def delete_environment(self, environment_id: str) -> None:
        await self._send(ops.delete_environment(environment_id))

    # -- events --------------------------------------------------------------------------
    async def record_events(self, items: list[dict[str, Any]]) -> Items[Event]:
        return await self._send(ops.record_events(items))

    async def list_events(self, **params: Any) -> Page[Event]:
        return await self._send(ops.list_events(**params))

    def iter_events(self, *, page_size: int = 500, **filters: Any) -> AsyncIterator[Event]:
        return self._iterate(
            lambda cursor: ops.list_events(limit=page_size, cursor=cursor, **filters)
        )

    def stream_events(
        self, *, last_event_id: str | None = None, read_timeout: float | None = 60.0, **filters: Any
    ) -> AsyncEventStream:
        """Live events; ``async for`` over it, ``aclose()`` it to stop. Resumes after a drop."""
        return AsyncEventStream(
            self._http, ops.stream_events(**filters), self.retry, last_event_id, read_timeout
        )

    # -- change feed, export/import, browser-storage migrations ----------------------

    async def list_changes(self, **params: Any) -> Any:
        return await self._send(do.list_changes(**params))

    async def changes_snapshot(self, **params: Any) -> Any:
        return await self._send(do.changes_snapshot(**params))

    async def export_data(self, **params: Any) -> Any:
        return await self._send(do.export_data(**params))

    async def import_data(self, payload: Any, **params: Any) -> Any:
        return await self._send(do.import_data(payload, **params))

    async def migrate_browser_storage(self, payload: dict[str, Any]) -> Any:
        return await self._send(do.migrate_browser_storage(payload))

    async def get_migration(self, migration_id: str) -> Any:
        return await self._send(do.get_migration(migration_id))

    async def rollback_migration(self, migration_id: str) -> Any:
        return await self._send(do.rollback_migration(migration_id))

    def stream_changes(
        self, *, last_event_id: str | None = None, read_timeout: float | None = 60.0, **params: Any
    ) -> AsyncEventStream:
        return AsyncEventStream(
            self._http, do.stream_changes(**params), self.retry, last_event_id, read_timeout
        )
