"""``MemoryServiceStore``: LangGraph's long-term memory store, answered by the service.

A store item ``(namespace, key) -> value`` is a memory named by a key: the
namespace tuple joined with ``.`` (LangGraph forbids ``.`` in labels), the value
kept whole in the memory's ``metadata.value``, and its text (the ``index``
fields, or every string in the value) as the memory's content, which the service
embeds. Search with a query is the service's vector search; ``filter`` becomes the
service's filter language over ``metadata.value.*``; TTLs become ``expires_at``.

Like LangGraph's own stores, everything is built on ``batch``; ``abatch`` runs
the same batch in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from langgraph.store.base.embed import get_text_at_path

from memory_service_client._exceptions import NotFoundError
from memory_service_client._sync import MemoryClient
from memory_service_client._types import Memory

SEPARATOR = "."
OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}


def namespace_text(namespace: tuple[str, ...]) -> str:
    return SEPARATOR.join(namespace)


def namespace_tuple(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(SEPARATOR)) if text else ()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def service_filter(flt: dict[str, Any] | None) -> dict[str, Any] | None:
    """LangGraph's ``{"field": value | {"$op": value}}`` over the value, as the
    service's filter over ``metadata.value.field``."""
    if not flt:
        return None
    clauses: dict[str, Any] = {}
    for field, condition in flt.items():
        if isinstance(condition, dict) and condition and set(condition) <= OPERATORS:
            clauses[f"metadata.value.{field}"] = condition
        else:
            clauses[f"metadata.value.{field}"] = {"$eq": condition}
    return clauses


class MemoryServiceStore(BaseStore):
    """A LangGraph ``BaseStore`` over the service. ``index_fields``: the value fields
    whose text is embedded (default: every string in the value)."""

    supports_ttl = True

    def __init__(self, client: MemoryClient, *, index_fields: list[str] | None = None) -> None:
        self.client = client
        self.index_fields = index_fields

    @classmethod
    def from_url(cls, base_url: str, api_key: str, **kwargs: Any) -> MemoryServiceStore:
        return cls(MemoryClient(base_url, api_key), **kwargs)

    # -- the two abstract methods ----------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, PutOp):
                self._put(op)
                results.append(None)
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise TypeError(f"unknown store operation {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return await anyio.to_thread.run_sync(self.batch, ops)

    # -- operations ------------------------------------------------------------------
    def _get(self, op: GetOp) -> Item | None:
        try:
            memory = self.client.get_memory_by_key(namespace_text(op.namespace), op.key)
        except NotFoundError:
            return None
        if op.refresh_ttl:
            self._refresh(memory)
        return _item(memory)

    def _put(self, op: PutOp) -> None:
        namespace = namespace_text(op.namespace)
        if op.value is None:
            with contextlib.suppress(NotFoundError):
                self.client.delete_memory_by_key(namespace, op.key)
            return
        value = dict(op.value)
        metadata: dict[str, Any] = {"value": value}
        expires_at = None
        if op.ttl is not None:
            metadata["ttl_minutes"] = op.ttl
            expires_at = _expiry(op.ttl)
        self.client.put_memory_by_key(
            namespace,
            op.key,
            self._text(value, op.index),
            metadata=metadata,
            expires_at=expires_at,
        )

    def _text(self, value: dict[str, Any], index: Any) -> str:
        fields = index if isinstance(index, list) else self.index_fields
        if fields:
            parts = [t for path in fields for t in get_text_at_path(value, path)]
        else:
            parts = _strings(value)
        text = "\n".join(p for p in parts if p.strip())
        return text or json.dumps(value, sort_keys=True, default=str)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        namespaces = self._namespaces_under(op.namespace_prefix)
        if not namespaces:
            return []
        clauses: list[dict[str, Any]] = [{"namespace": {"$in": namespaces}}]
        value_filter = service_filter(op.filter)
        if value_filter:
            clauses.append(value_filter)
        flt = {"$and": clauses} if len(clauses) > 1 else clauses[0]
        wanted = op.offset + op.limit
        found: list[tuple[Memory, float | None]]
        if op.query:
            hits = self.client.search(op.query, k=min(wanted, 1000), filter=flt)["results"]
            found = [(hit["memory"], hit["score"]) for hit in hits]
        else:
            page = self.client.list_memories(filter=json.dumps(flt), limit=min(wanted, 1000))
            found = [(memory, None) for memory in page["items"]]
        items = []
        for memory, score in found[op.offset : wanted]:
            if op.refresh_ttl:
                self._refresh(memory)
            items.append(_search_item(memory, score))
        return items

    def _namespaces_under(self, prefix: tuple[str, ...]) -> list[str]:
        params: dict[str, Any] = {"prefix": namespace_text(prefix)} if prefix else {}
        return [n["namespace"] for n in self.client.iter_namespaces(**params)]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        params: dict[str, Any] = {}
        conditions = op.match_conditions or ()
        for condition in conditions:
            if "*" not in condition.path:
                params[condition.match_type] = namespace_text(tuple(condition.path))
        if op.max_depth is not None:
            params["max_depth"] = op.max_depth
        names = [
            namespace_tuple(n["namespace"]) for n in self.client.iter_namespaces(**params)
        ]
        names = [n for n in names if all(_matches(n, c) for c in conditions)]
        return names[op.offset : op.offset + op.limit]

    def _refresh(self, memory: Memory) -> None:
        minutes = memory["metadata"].get("ttl_minutes")
        if minutes is not None and memory.get("key"):
            self.client.update_memory(memory["id"], expires_at=_expiry(float(minutes)))


def _matches(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = tuple(condition.path)
    if len(path) > len(namespace):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


def _expiry(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def _item(memory: Memory) -> Item:
    return Item(
        value=memory["metadata"].get("value", {"content": memory["content"]}),
        key=memory.get("key") or memory["id"],
        namespace=namespace_tuple(memory["namespace"]),
        created_at=datetime.fromisoformat(memory["created_at"]),
        updated_at=datetime.fromisoformat(memory["updated_at"]),
    )


def _search_item(memory: Memory, score: float | None) -> SearchItem:
    return SearchItem(
        namespace=namespace_tuple(memory["namespace"]),
        key=memory.get("key") or memory["id"],
        value=memory["metadata"].get("value", {"content": memory["content"]}),
        created_at=datetime.fromisoformat(memory["created_at"]),
        updated_at=datetime.fromisoformat(memory["updated_at"]),
        score=score,
    )
