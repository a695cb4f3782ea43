"""The memory budget of the held tenants: what each takes and who goes to make room.

Admission reserves what a tenant is expected to take (vectors, labels, rows and
the keyword index's share) and a tenant still loading counts at least that much,
so concurrent admissions cannot promise the same room twice. Estimates are only
estimates and tenants grow while held: after a load, and after a change once the
count at hand plus the growth writes reported passes the budget, the held tenants are
counted again and the least recently used ready ones go until the rest fit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from indexers import keyword_index
from indexers.faiss_index import LABEL_ENTRY_BYTES
from memory_service.memories.rows import ROW_OVERHEAD_BYTES
from memory_service.search import scoped
from memory_service.search.tenant import TenantIndex

KEYWORD_ROW_BYTES = 600  # the keyword index's share of a row, before its text is known


class MemoryBudget:
    def __init__(
        self,
        budget_bytes: int,
        tenants: dict[uuid.UUID, TenantIndex],
        vector_bytes: Callable[[int], int],
        *,
        keywords_hot: bool,
    ) -> None:
        self.budget_bytes = budget_bytes
        self._tenants = tenants  # the holder's own dict: always what is held right now
        self._vector_bytes = vector_bytes  # one vector of a tenant of this many rows
        self._keywords_hot = keywords_hot
        # the held bytes at the last exact count plus the growth reported since: a write
        # adds its own growth, and only when this passes the budget are all tenants
        # counted again (counting them on every write costs a walk over every tenant)
        self._estimate = 0

    def bytes_for(self, count: int) -> int:
        """Vectors, links and rows of ``count`` memories, plus the keyword index's fixed part."""
        text = KEYWORD_ROW_BYTES if self._keywords_hot else 0
        fixed = keyword_index.INDEX_OVERHEAD_BYTES if self._keywords_hot else 0
        per_row = self._vector_bytes(count) + LABEL_ENTRY_BYTES + ROW_OVERHEAD_BYTES + text
        return fixed + count * per_row

    def used(self) -> int:
        return sum(bytes_of(t) for t in self._tenants.values())

    def fits(self, need: int) -> bool:
        return self.used() + need <= self.budget_bytes

    def room_for(self, need: int, *, keep: uuid.UUID) -> list[TenantIndex] | None:
        """The least recently used ready tenants whose eviction makes room for ``need``
        (none when it fits already), or None when even all of them would not."""
        used = self.used()
        victims: list[TenantIndex] = []
        for t in sorted(self._ready(), key=lambda t: t.last_used):
            if used + need <= self.budget_bytes:
                break
            if t.tenant_id != keep:
                used -= bytes_of(t)
                victims.append(t)
        return victims if used + need <= self.budget_bytes else None

    def grew(self, delta: int) -> list[TenantIndex]:
        """A held tenant grew by ``delta`` bytes (a write); the tenants to let go, counted
        exactly only once the estimate passes the budget."""
        self._estimate += delta
        return self.over() if self._estimate > self.budget_bytes else []

    def over(self) -> list[TenantIndex]:
        """The least recently used ready tenants to let go so that the rest fit."""
        used = self.used()
        victims: list[TenantIndex] = []
        for t in sorted(self._ready(), key=lambda t: t.last_used):
            if used <= self.budget_bytes:
                break
            used -= bytes_of(t)
            victims.append(t)
        self._estimate = used
        return victims

    def _ready(self) -> list[TenantIndex]:
        return [t for t in self._tenants.values() if t.ready]


def bytes_of(t: TenantIndex) -> int:
    """What a held tenant counts: what it holds, and at least its reservation while loading."""
    held = (
        t.row_bytes
        + (t.index.memory_bytes() if t.index is not None else 0)
        + (t.keywords.memory_bytes() if t.keywords is not None else 0)
        + scoped.bytes_of(t.scoped)
    )
    return held if t.ready else max(held, t.reserved)
