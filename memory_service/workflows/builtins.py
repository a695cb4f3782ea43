"""The built-in step kinds that call the tenant's own memories: ``memory.search``, ``memory.add``.

Each takes the step's resolved input (the fields of the HTTP search or add
request) and returns a JSON output. ``memory.add`` is safe to run twice (the
driver's delivery is at least once, like any worker's): adding the same
content, scope and metadata again answers the memory the first try stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from memory_service.errors import FieldError, InvalidInput
from memory_service.memories.models import SCOPE_FIELDS, NewMemory, Scope, SearchRequest
from memory_service.memories.service import MemoryService
from memory_service.search.service import SearchService


@dataclass(frozen=True, slots=True)
class MemorySteps:
    """What the built-in steps call: the memories' writes and their search."""

    memories: MemoryService
    search: SearchService


_SEARCH_KEYS = {"query", "k", "filter", "mode", "min_score", *SCOPE_FIELDS}
_ADD_KEYS = {"content", "metadata", "importance", *SCOPE_FIELDS}


def _fields(step_input: Any, allowed: set[str], kind: str) -> dict[str, Any]:
    if not isinstance(step_input, dict):
        raise InvalidInput(f"a {kind} step's input is an object")
    unknown = set(step_input) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"a {kind} step takes no {name!r}", errors=[FieldError(name, "unknown")])
    return step_input


def _scope(fields: dict[str, Any]) -> Scope:
    return Scope(**{k: fields[k] for k in SCOPE_FIELDS if fields.get(k) is not None})


async def memory_search(steps: MemorySteps, tenant_id: uuid.UUID, step_input: Any) -> Any:
    fields = _fields(step_input, _SEARCH_KEYS, "memory.search")
    request = SearchRequest(
        query=fields.get("query"),
        k=fields.get("k", 10),
        scope=_scope(fields),
        filter=fields.get("filter"),
        mode=fields.get("mode"),  # none named: the service's default ranking
        min_score=fields.get("min_score"),
    )
    result = await steps.search.search(tenant_id, request)
    return {
        "results": [
            {
                "id": hit.memory.id,
                "content": hit.memory.content,
                "metadata": hit.memory.metadata,
                "score": hit.score,
            }
            for hit in result.results
        ],
        "strategy": result.strategy,
    }


async def memory_add(steps: MemorySteps, tenant_id: uuid.UUID, step_input: Any) -> Any:
    fields = _fields(step_input, _ADD_KEYS, "memory.add")
    item = NewMemory(
        content=fields.get("content"),  # type: ignore[arg-type]  # checked by the service
        scope=_scope(fields),
        metadata=fields.get("metadata", {}),
        importance=fields.get("importance", 0.5),
    )
    memory, created = await steps.memories.add(tenant_id, item)
    return {"id": memory.id, "created": created}


BUILTINS = {"memory.search": memory_search, "memory.add": memory_add}
