"""One held tenant: its FAISS index, its keyword index, its rows, and how changes land.

``TenantIndex`` is the state; the functions here keep the rows (``seq -> Memory``
without embedding, what searches filter and answer from) and the keyword index
(their searchable text) in step with the vectors, and count what the rows cost
against the memory budget.

No stored row can stop a tenant from loading or a change from landing. A row whose
metadata the posting lists cannot key exactly (see ``postings``) is held, posted as
far as it can be, and left to ``RowCheck``; a row the keyword index refuses is left
out of it, and keyword searches of that tenant go to SQL while it holds one. Each such
row is logged and counted in ``skipped`` (by index name: ``postings``, ``keyword``),
which ``/metrics`` reports as ``memory_index_rows_skipped_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from indexers.faiss_index import FaissIndex
from indexers.keyword_index import KeywordIndex
from memory_service.memories.models import Memory
from memory_service.memories.rows import VectorRows, row_bytes
from memory_service.search.postings import Postings
from memory_service.search.scoped import ScopeIndexes

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TenantIndex:
    tenant_id: uuid.UUID
    index: FaissIndex | None = None
    keywords: KeywordIndex | None = None  # BM25 over the rows' text, when keyword search is hot
    ready: bool = False
    pending: set[int] = field(default_factory=set)  # changed while loading
    # seq -> when its deletion was applied; seqs are never reused, so a late upsert of
    # one of these is stale (kept for DELETED_MEMORY_S, far longer than any such race)
    deleted: dict[int, float] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)  # only rows past version 1
    # seq -> the row as the database has it (no embedding): searches filter and answer
    # from these without a database round trip; they change together with the vectors
    rows: dict[int, Memory] = field(default_factory=dict)
    seq_of: dict[str, int] = field(default_factory=dict)  # memory id -> seq
    postings: Postings = field(default_factory=Postings)  # candidates of the exact path
    expiring: set[int] = field(default_factory=set)  # held rows with an expiry time
    scoped: ScopeIndexes = field(default_factory=dict)  # graphs of large, searched scopes
    row_bytes: int = 0  # rows and postings, counted in the memory budget
    reserved: int = 0  # what admission expected it to take; counted until it is loaded
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rebuild_log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    rebuilding: bool = False
    erased: set[int] = field(default_factory=set)  # seqs a purge has wiped here already
    erase_after_rebuild: set[int] = field(default_factory=set)  # purged during a rebuild
    dirty: bool = False
    loaded_from: str = ""
    # scope-and-filter shape -> the share of the index it let through last time
    selectivity: OrderedDict[str, float] = field(default_factory=OrderedDict)
    last_used: float = field(default_factory=time.monotonic)
    # rows an index could not hold, by index name (the process's counter, shared by tenants)
    skipped: Counter[str] = field(default_factory=Counter)
    keyword_skipped: set[int] = field(default_factory=set)  # held rows not in ``keywords``
    # seconds a search of ``keywords`` took lately (a moving average); None: not yet timed
    keyword_cost_s: float | None = None


def remember_versions(t: TenantIndex, rows: VectorRows) -> None:
    for seq, version in zip(rows.seqs.tolist(), rows.versions.tolist(), strict=True):
        if version > 1:
            t.versions[seq] = version


def hold_rows(t: TenantIndex, memories: list[Memory]) -> None:
    for memory in memories:
        old = t.rows.get(memory.seq)
        if old is not None:
            t.row_bytes -= row_bytes(old) + t.postings.remove(old)
        t.rows[memory.seq] = memory
        t.seq_of[memory.id] = memory.seq
        if memory.expires_at is not None:
            t.expiring.add(memory.seq)
        else:
            t.expiring.discard(memory.seq)
        t.row_bytes += row_bytes(memory) + t.postings.add(memory)
        if memory.seq in t.postings.unposted:
            _skipped(t, "postings", memory, "a metadata value has no exact key")


def drop_rows(t: TenantIndex, seqs: set[int]) -> None:
    for seq in seqs:
        old = t.rows.pop(seq, None)
        t.expiring.discard(seq)
        if old is not None:
            t.row_bytes -= row_bytes(old) + t.postings.remove(old)
            t.seq_of.pop(old.id, None)


async def settled(t: TenantIndex) -> None:
    """Wait until no change is being applied to the tenant."""
    if t.lock.locked():
        async with t.lock:
            pass


def stale(t: TenantIndex, versions: dict[int, int]) -> list[int]:
    """The seqs whose current version (``versions``) the tenant's index does not hold:
    rows this process already holds at their current version (its own writes, applied
    by the listener) need not travel again."""
    index = t.index
    return [
        seq
        for seq, version in versions.items()
        if index is None or not index.contains(seq) or t.versions.get(seq, 1) < version
    ]


def no_rows(dimension: int) -> VectorRows:
    empty = np.zeros(0, dtype=np.int64)
    return VectorRows(empty, empty, np.zeros((0, dimension), dtype=np.float32), [])


def mutate(index: FaissIndex, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> None:
    if len(ids):
        index.add(ids, vectors)
    if len(removed):
        index.remove(removed)


def searchable_text(memory: Memory) -> str:
    """What keyword search matches: the content and its context, as the SQL columns hold."""
    return memory.content + " " + (memory.context or "")


def index_text(t: TenantIndex, memories: list[Memory], gone: set[int]) -> None:
    """Bring the keyword index in step with the rows (blocking: run in a worker thread).

    A batch the index refuses is applied row by row, so that only the rows it refuses
    are left out (and counted); keyword searches of the tenant go to SQL meanwhile."""
    keywords = t.keywords
    if keywords is None:
        return
    t.keyword_skipped -= gone
    try:
        keywords.apply([(m.seq, searchable_text(m)) for m in memories], gone)
    except Exception:  # the refused rows are found one by one below
        keywords.apply([], gone)
        for memory in memories:
            try:
                keywords.apply([(memory.seq, searchable_text(memory))])
            except Exception as exc:  # logged and counted, never raised
                keywords.apply([], {memory.seq})  # its old text must not answer for it
                t.keyword_skipped.add(memory.seq)
                _skipped(t, "keyword", memory, f"{type(exc).__name__}: {exc}")
            else:
                t.keyword_skipped.discard(memory.seq)
    else:
        t.keyword_skipped.difference_update(m.seq for m in memories)


def rebuild_text(t: TenantIndex, memories: list[Memory]) -> None:
    """Make the keyword index afresh from ``memories`` (blocking: a worker thread). A
    purge needs it: tantivy keeps a deleted document's words in its segment until it
    merges that segment, which it may never do."""
    if t.keywords is not None:
        t.keywords = KeywordIndex(t.keywords.simple_weight)
        t.keyword_skipped.clear()
        index_text(t, memories, set())


def _skipped(t: TenantIndex, index: str, memory: Memory, why: str) -> None:
    t.skipped[index] += 1
    log.warning(
        "the %s index of tenant %s cannot hold memory %s (%s); the exact path answers for it",
        index,
        t.tenant_id,
        memory.id,
        why,
    )
