"""The search planner: which path answers a vector search, and how hard it looks.

Paths: ``faiss`` ranks the tenant's FAISS index and re-checks the top rows in
SQL (tenant, scope, filter, expiry), fetching more than ``k`` when a filter
drops some; ``exact`` asks SQL for the ids of every matching row and scores just
those vectors in memory, exact by construction; ``pgvector`` hands the search to
the database. The choice rests on the estimated number of candidates: without
scope or filter it is the whole index; with them, the share of FAISS
neighbours that survived the re-check estimates the selectivity (the first
probe is cheap, and what it sees is the neighbourhood that matters). A
selective filter would need too deep a FAISS probe, so it goes exact; one too
broad for an exact pass but too rare for probing goes to pgvector. Between
probing deeper and an exact pass, a simple cost model picks the cheaper. Each
tenant remembers the share it measured per scope-and-filter shape, so an agent
that repeats a scoped search goes straight to the right path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from memory_service.config import Settings

FIRST_PROBE_MIN = 40  # neighbours fetched by the first probe of a filtered search
MAX_EF = 4096
# scoring one candidate row exactly (its id from SQL, a dot product) costs about a
# quarter of probing one FAISS neighbour (graph walk plus its SQL re-check)
EXACT_ROWS_PER_PROBED_ROW = 4


@dataclass(frozen=True, slots=True)
class Plan:
    path: str  # "faiss" | "exact" | "pgvector"
    fetch: int = 0  # neighbours to rank before the re-check
    ef_search: int = 0
    estimated_candidates: int | None = None


def first_plan(k: int, index_size: int, *, filtered: bool, settings: Settings) -> Plan:
    if not filtered:
        return Plan("faiss", k, max(settings.faiss_ef_search, k), index_size)
    fetch = max(4 * k, FIRST_PROBE_MIN)
    return Plan("faiss", fetch, probe_ef(fetch, settings))


def next_plan(k: int, index_size: int, ranked: int, survived: int, settings: Settings) -> Plan:
    """After a probe ranked ``ranked`` neighbours of which ``survived`` matched."""
    share = max(survived, 0.5) / max(ranked, 1)
    return plan_for_share(k, index_size, share, settings, at_least=2 * ranked)


def plan_for_share(
    k: int, index_size: int, share: float, settings: Settings, *, at_least: int = 0
) -> Plan:
    """The plan for a filter that lets ``share`` of the index through."""
    estimated = math.ceil(share * index_size)
    fetch = max(math.ceil(2.0 * k / max(share, 1e-9)), at_least, FIRST_PROBE_MIN)
    exact_is_cheaper = estimated <= EXACT_ROWS_PER_PROBED_ROW * fetch
    if fetch <= settings.faiss_post_filter_max and not exact_is_cheaper:
        return Plan("faiss", fetch, probe_ef(fetch, settings), estimated)
    if estimated <= settings.faiss_exact_max:
        return Plan("exact", estimated_candidates=estimated)
    if fetch <= settings.faiss_post_filter_max:
        return Plan("faiss", fetch, probe_ef(fetch, settings), estimated)
    return Plan("pgvector", estimated_candidates=estimated)


def probe_ef(fetch: int, settings: Settings) -> int:
    """A deep probe must rank its whole list well, not just the head: walk twice as wide."""
    return min(MAX_EF, max(settings.faiss_filtered_ef_search, 2 * fetch))
