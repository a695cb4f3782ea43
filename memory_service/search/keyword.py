"""Keyword ranking with exactly k results: the held tenant's keyword index, else SQL.

``KeywordRanking.search`` first asks the in-process keyword index of a tenant
this process holds (``TenantIndex.keywords``, BM25 over the same rows FAISS
holds, following the same change log): scope and filter are decided in process
by ``RowCheck``, the posting lists narrow the candidates the index may return,
and the ranked list grows until it holds ``k`` matching rows or every match.
PostgreSQL full-text search (``retrieval.keyword.KeywordSearch``) answers
instead when the tenant is not held or not ready, when the filter needs the
database, when the index left out a row it could not hold, or when too many
ranked rows fail the filter. ``"consistency":
"strong"`` first applies the tenant's pending changes (one round trip), as
vector search does. Scores, as in SQL, are BM25 over the best BM25 of the query.
As in SQL, a search confined to a scope or filter weighs each query word by its
document frequency among the rows that scope and filter allow (the candidates of
the posting lists, up to ``ALLOW_MAX`` of them; beyond that, and over the whole
tenant, the tenant's held rows give it). The mean document length is the
tenant's (SQL takes it from the rows in scope), so near-ties can still order
differently.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import anyio.to_thread

from indexers.keyword_index import KeywordIndex
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SearchHit, SearchRequest
from memory_service.memories.predicate import RowCheck
from memory_service.retrieval.keyword import KeywordSearch, require_query_text
from memory_service.search.accelerator import HotSearch
from memory_service.search.tenant import TenantIndex

IN_PROCESS = "keyword-hot"
IN_DATABASE = "keyword-bm25"
ALLOW_MAX = 20_000  # candidate seqs handed to the index as a term set at most
RANKED_MAX = 5_000  # ranked rows read at most before a filter that rejects them goes to SQL
# a keyword search expected to take at most this long runs on the event loop, since a hop
# to a worker thread costs 0.1-0.15 ms (at 20,000 SciFact abstracts, about 0.3 ms a
# search, that took the default mode's p50 from 2.77 to 2.52 ms over HTTP); longer ones
# go to a thread, where tantivy runs beside the loop. Each held index's searches are
# timed (a moving average), so the choice follows what the searches cost, not the size;
# an index not timed yet goes by size
INLINE_BUDGET_S = 0.001
INLINE_SIZE_MAX = 10_000
COST_WEIGHT = 0.2  # of the newest search in the moving average
GROWTH = 4


class KeywordRanking:
    def __init__(self, database: KeywordSearch, hot: HotSearch | None) -> None:
        self.database = database
        self.hot = hot

    async def search(
        self, tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None, k: int
    ) -> tuple[list[SearchHit], str]:
        require_query_text(request)
        if self.hot is not None:
            hits = await self.in_process(tid, request, flt, k)
            if hits is not None:
                return hits, IN_PROCESS
        return await self.database.search(tid, request, flt, k), IN_DATABASE

    async def in_process(
        self, tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None, k: int
    ) -> list[SearchHit] | None:
        """The ranking from the held keyword index, or None when the database should answer."""
        assert self.hot is not None and request.query is not None
        indexes = self.hot.indexes
        t = indexes.ready(tid) or await indexes.admit(tid)
        if t is None or t.keywords is None or t.keyword_skipped:
            return None  # not held, or missing rows the database has
        check = RowCheck.build(request.scope, flt)
        if check is None:
            return None
        if request.consistency == "strong":
            await indexes.sync(t, self.hot.follower.mark)  # the one extra round trip
        filtered = bool(request.scope.given()) or flt is not None
        allow = t.postings.candidates(request.scope, request.filter) if filtered else None
        if allow is not None and len(allow) >= len(t.rows):
            allow, filtered = None, flt is not None  # the scope holds every row
        elif allow is not None and len(allow) > ALLOW_MAX:
            allow = None
        return await _ranked(t, request.query, k, check, allow, filtered)


async def _ranked(
    t: TenantIndex,
    text: str,
    k: int,
    check: RowCheck,
    allow: set[int] | None,
    filtered: bool,
) -> list[SearchHit] | None:
    """The best ``k`` matching rows, growing the ranked list until it holds them (or every
    match); None when that would read more than ``RANKED_MAX`` rows."""
    keywords = t.keywords
    assert keywords is not None
    limit = k * GROWTH if filtered and allow is None else k
    while True:
        cost = t.keyword_cost_s
        inline = keywords.size <= INLINE_SIZE_MAX if cost is None else cost <= INLINE_BUDGET_S
        if inline:
            found, total, took = _timed(keywords, text, limit, allow)
        else:
            found, total, took = await anyio.to_thread.run_sync(
                _timed, keywords, text, limit, allow
            )
        t.keyword_cost_s = took if cost is None else cost + COST_WEIGHT * (took - cost)
        now, rows = datetime.now(UTC), t.rows
        hits = [
            SearchHit(row, score)
            for seq, score in found
            if (row := rows.get(seq)) is not None and check.matches(row, now)
        ]
        if len(hits) >= k or len(found) >= total:
            return _normalised(hits[:k])
        if limit >= RANKED_MAX:
            return None
        limit = min(RANKED_MAX, limit * GROWTH)


def _timed(
    keywords: KeywordIndex, text: str, limit: int, allow: set[int] | None
) -> tuple[list[tuple[int, float]], int, float]:
    started = time.perf_counter()
    found, total = keywords.search(text, limit, allow)
    return found, total, time.perf_counter() - started


def _normalised(hits: list[SearchHit]) -> list[SearchHit]:
    best = (hits[0].score if hits else 1.0) or 1.0
    for hit in hits:
        hit.score /= best
        hit.components = {"keyword": hit.score}
    return hits
