"""Rows as the service holds them: decoding database rows into ``Memory`` values.

No SQL here: ``memories.repository`` runs the statements and hands their rows
to these helpers; the in-process indexes receive ``VectorRows`` batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memory_service.memories.models import Memory

# a Memory with its strings, datetimes and dicts, measured with tracemalloc on 10k rows
ROW_OVERHEAD_BYTES = 1100
METADATA_KEY_BYTES = 160


def to_numpy(value: Any) -> np.ndarray:
    """A float32 array from whatever the pgvector loader returned (``Vector`` or array)."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def row_to_memory(row: dict[str, Any], *, with_embedding: bool = False) -> Memory:
    embedding = row.get("embedding") if with_embedding else None
    if embedding is not None:
        embedding = to_numpy(embedding)
    return Memory(
        id=str(row["id"]),
        content=row["content"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        run_id=row["run_id"],
        namespace=row["namespace"],
        metadata=row["metadata"],
        importance=float(row["importance"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        version=row["version"],
        embedding=embedding,
        seq=row["seq"],
        key=row.get("key"),
        context=row.get("context"),
    )


@dataclass(slots=True)
class VectorRows:
    """Rows with their embeddings, as the in-process indexes load and apply them."""

    seqs: np.ndarray  # int64
    versions: np.ndarray  # int64
    vectors: np.ndarray  # float32 (n, dim); (0, dim) when only the rows were read
    memories: list[Memory]  # the rows themselves, without embedding, aligned with seqs

    def __len__(self) -> int:
        return len(self.seqs)


def stack_rows(rows: Sequence[dict[str, Any]], dimension: int) -> VectorRows:
    """``VectorRows`` from rows of ``COLUMNS`` (plus ``embedding`` when it was read)."""
    memories = [row_to_memory(r) for r in rows]
    seqs = np.asarray([m.seq for m in memories], dtype=np.int64)
    versions = np.asarray([m.version for m in memories], dtype=np.int64)
    if not rows or "embedding" not in rows[0]:
        return VectorRows(seqs, versions, np.zeros((0, dimension), dtype=np.float32), memories)
    vectors = np.stack([to_numpy(r["embedding"]) for r in rows])
    return VectorRows(seqs, versions, vectors, memories)


def row_bytes(memory: Memory) -> int:
    """About what one held row costs in memory (counted in the FAISS budget)."""
    text = len(memory.content) + len(memory.context or "")
    keys = len(memory.metadata) if isinstance(memory.metadata, dict) else 0  # SQL can store null
    return ROW_OVERHEAD_BYTES + text + METADATA_KEY_BYTES * keys


@dataclass(frozen=True, slots=True)
class Bm25Params:
    k1: float
    b: float
    simple_weight: float  # weight of the language-neutral field against the language one
    stats_cap: int  # rows read at most to estimate the corpus size and mean length


def any_of(lexemes: Sequence[str]) -> str:
    """A tsquery text matching any of ``lexemes``, each quoted verbatim (no stemming)."""
    quoted = ["'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in lexemes]
    return " | ".join(quoted)
