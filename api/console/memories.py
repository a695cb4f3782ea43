"""The memory explorer: search with mode, scope and filter, the score breakdown, history.

Search goes through ``SearchService.search`` with ``explain`` on, so every result
carries the components its score adds up from; without a query the page lists
the scope's memories, oldest first, a cursor page at a time.
"""

from __future__ import annotations

import difflib
import re
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Template

from api.console.forms import json_object
from api.console.rendering import page, status_of
from memory_service.errors import FieldError, InvalidInput, MemoryServiceError
from memory_service.memories.models import Scope, SearchRequest
from memory_service.memories.service import MemoryService
from memory_service.search.service import SearchService

MODES = ("vector", "keyword", "hybrid")
SCOPE_FIELDS = ("user_id", "agent_id", "run_id", "namespace")


def _k(text: str | None) -> int:
    if not text:
        return 10
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise InvalidInput("k must be between 1 and 100", errors=[FieldError("k", "1..100")])
    return int(text)


class MemoryPagesController(Controller):
    path = "/memories"
    include_in_schema = False

    @get("/")
    async def explorer(
        self,
        request: Request[Any, Any, Any],
        memories: NamedDependency[MemoryService],
        search: NamedDependency[SearchService],
        tenant_id: NamedDependency[uuid.UUID],
        text: Annotated[str | None, QueryParameter(name="query", max_length=4096)] = None,
        mode: FromQuery[str | None] = None,
        k: FromQuery[str | None] = None,
        user_id: FromQuery[str | None] = None,
        agent_id: FromQuery[str | None] = None,
        run_id: FromQuery[str | None] = None,
        namespace: FromQuery[str | None] = None,
        filter: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        form = {
            "query": text or "",
            "mode": mode or search.default_mode,
            "k": k or "10",
            "filter": filter or "",
            **{name: value or "" for name, value in zip(
                SCOPE_FIELDS, (user_id, agent_id, run_id, namespace), strict=True
            )},
        }
        scope = Scope(*(form[f].strip() or None for f in SCOPE_FIELDS))
        context: dict[str, Any] = {"form": form, "modes": MODES, "error": None}
        context.update(results=None, listing=None, next_cursor=None, took_ms=None, strategy=None)
        status = 200
        try:
            flt = json_object(form["filter"].strip(), "filter") or None
            if form["query"].strip():
                result = await search.search(
                    tenant_id,
                    SearchRequest(
                        query=form["query"].strip(),
                        k=_k(k),
                        scope=scope,
                        filter=flt,
                        mode=form["mode"],
                        options={"explain": True},
                    ),
                )
                context.update(
                    results=result.results, took_ms=result.took_ms, strategy=result.strategy
                )
            else:
                listing = await memories.list_memories(
                    tenant_id, scope, limit=25, cursor=cursor, filter=flt
                )
                context.update(listing=listing.items, next_cursor=listing.next_cursor)
        except MemoryServiceError as exc:
            context["error"] = exc.detail
            status = status_of(exc)
        return page(
            request, "memories/explorer.html", status_code=status, active="memories", **context
        )

    @get("/{memory_id:str}")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        memory_id: FromPath[str],
        memories: NamedDependency[MemoryService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Template:
        memory = await memories.get(tenant_id, memory_id)
        history = await memories.history(tenant_id, memory_id)
        diffs = [word_diff(h.old_content or "", h.new_content or "") for h in history]
        return page(
            request,
            "memories/detail.html",
            active="memories",
            memory=memory,
            history=list(zip(history, diffs, strict=True)),
        )


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """``old`` to ``new`` as runs of ``("same" | "del" | "ins", text)``, word by word
    (whitespace kept with the word before it), so a history entry reads as one sentence
    with what was taken out struck through and what came in marked."""
    before, after = re.findall(r"\S+\s*", old), re.findall(r"\S+\s*", new)
    runs: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            runs.append(("same", "".join(before[a0:a1])))
            continue
        if a1 > a0:
            runs.append(("del", "".join(before[a0:a1])))
        if b1 > b0:
            runs.append(("ins", "".join(after[b0:b1])))
    return runs
