"""Purge: erasing deleted memories from the past, not only from the present.

A plain delete removes the live row; the past keeps it (``as_of`` reads, history,
the change feed). ``?purge=true`` also erases, in the delete's own transaction,
what the memory tables keep of it: every version (content and embedding,
``memories.as_of``) and every history row (``memories.history``). What other
tables keep is erased by the ``PurgeStep``s the service is built with, each owned
by that table's module (the change feed's bodies, the change log's purge mark,
migration backups), so this package depends on none of them. After the commit,
the ``Eraser``s wipe what a process holds outside the database (FAISS vectors,
keyword terms, snapshot files). Only the fact that a purge happened stays, in
``erasure_audit``. docs/operations.md lists what purge erases and what it leaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from memory_service.memories import as_of
from memory_service.memories import history as history_repo
from memory_service.memories.repository import Conn

# in the purge's transaction: erase what one table keeps of these memories (id -> seq)
PurgeStep = Callable[[Conn, uuid.UUID, Mapping[str, int]], Awaitable[None]]
# after the commit: wipe what a process keeps of these memory seqs in memory and on disk
Eraser = Callable[[uuid.UUID, Collection[int]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Erased:
    seqs: dict[str, int]  # memory id -> seq (its id in FAISS and the keyword index)
    contents: set[str]  # every content the memories had, in any version


async def erase_past(
    conn: Conn,
    tenant_id: uuid.UUID,
    memory_ids: Sequence[str],
    kind: str,
    steps: Sequence[PurgeStep],
    *,
    deleted: bool,
) -> Erased | None:
    """Erase every version and history row of ``memory_ids`` and run each step; None
    when there was nothing to erase (no such memories, now or ever, in this tenant).
    ``deleted``: the caller has just deleted live rows of them in this transaction."""
    seqs, contents = await as_of.erase_versions(conn, tenant_id, memory_ids)
    history_rows = await history_repo.erase_history(conn, tenant_id, memory_ids)
    if not (deleted or seqs or history_rows):
        return None
    for step in steps:
        await step(conn, tenant_id, seqs)
    await history_repo.record_erasure(conn, tenant_id, kind, len(memory_ids))
    return Erased(seqs, contents)
