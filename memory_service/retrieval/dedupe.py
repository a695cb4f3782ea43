"""Semantic dedupe on add: fold a near-copy into the memory it repeats.

When dedupe is on for an item (its own ``dedupe`` flag, else the tenant's
default), the item is compared with the live memories of exactly the same scope
(all four scope fields equal, missing ones included) and with the earlier items
of the same batch. If the closest has cosine similarity >= the threshold, the
item is not inserted: the existing memory gets the item's metadata merged in,
the higher importance, the later expiry and a last-seen time, as one UPDATE
that the history trigger records. It runs inside the add's transaction, so a
batch stays all or nothing. Scopes and tenants are never crossed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from memory_service.config import Settings
from memory_service.memories import repository as repo
from memory_service.memories.models import Memory
from memory_service.retrieval import storage

# index of an item -> the memory it was folded into, or the earlier batch item it repeats
Folded = dict[int, Memory | int]


def _later_expiry(a: datetime | None, b: datetime | None) -> datetime | None:
    return None if a is None or b is None else max(a, b)


class SemanticDedupe:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def defaults(self, conn: AsyncConnection[Any], tid: uuid.UUID) -> tuple[bool, float]:
        stored = await storage.get_tenant_settings(conn, tid)
        return stored if stored is not None else (False, self.settings.dedupe_threshold)

    async def __call__(
        self, conn: AsyncConnection[Any], tid: uuid.UUID, prepared: list[dict[str, Any]]
    ) -> Folded:
        if all(p.get("dedupe") is False for p in prepared):
            return {}
        default_on, default_threshold = await self.defaults(conn, tid)
        folded: Folded = {}
        to_insert: list[int] = []
        for i, item in enumerate(prepared):
            wanted = item.get("dedupe")
            if not (default_on if wanted is None else wanted):
                to_insert.append(i)
                continue
            threshold = item.get("dedupe_threshold") or default_threshold
            vector = np.asarray(item["embedding"], dtype=np.float32)
            best_item, best_item_sim = -1, -2.0
            for j in to_insert:
                if prepared[j]["scope"] == item["scope"]:
                    sim = float(np.dot(vector, np.asarray(prepared[j]["embedding"])))
                    if sim > best_item_sim:
                        best_item, best_item_sim = j, sim
            stored = await repo.nearest_in_scope(conn, tid, item["scope"], vector)
            stored_sim = stored[1] if stored else -2.0
            if best_item >= 0 and best_item_sim >= threshold and best_item_sim >= stored_sim:
                target = prepared[best_item]
                target["metadata"] = {**target["metadata"], **item["metadata"]}
                target["importance"] = max(target["importance"], item["importance"])
                target["expires_at"] = _later_expiry(target["expires_at"], item["expires_at"])
                folded[i] = best_item
            elif stored is not None and stored_sim >= threshold:
                folded[i] = await repo.merge_into(
                    conn, tid, stored[0], item["metadata"], item["importance"], item["expires_at"]
                )
            else:
                to_insert.append(i)
        return folded
