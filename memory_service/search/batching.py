"""Unfiltered probes of one index that arrive together run together (group commit).

While a batch of probes of an index runs in a worker thread, the probes that
arrive meanwhile queue up, and the next batch takes all of them in one call
(``FaissIndex.search_many``): under concurrency a flat index is scanned once per
batch instead of once per query, and a batch costs one hop to a thread, not one
per request. A probe that finds its index idle starts a batch of one at once, so
a lone request waits for nobody.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np

from indexers.base import Ids, Scores
from indexers.faiss_index import FaissIndex

Found = tuple[Ids, Scores]


@dataclass
class _Lane:
    index: FaissIndex
    ef_search: int
    waiting: list[tuple[np.ndarray, int, asyncio.Future[Found]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class ProbeBatcher:
    def __init__(self) -> None:
        # (id of the index, efSearch) -> its lane; a lane holds its index, so the id
        # cannot be reused by another index while the lane exists
        self._lanes: dict[tuple[int, int], _Lane] = {}
        self.batches = 0  # how many calls into an index the probes took
        self.probes = 0

    def busy(self, index: FaissIndex) -> bool:
        """Whether probes of ``index`` are running or queued right now."""
        return any(lane.index is index for lane in self._lanes.values())

    async def search(self, index: FaissIndex, query: np.ndarray, k: int, ef_search: int) -> Found:
        future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        key = (id(index), ef_search)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(index, ef_search)
            lane.task = asyncio.create_task(self._drain(key, lane))
        lane.waiting.append((np.asarray(query, dtype=np.float32).reshape(-1), k, future))
        return await future

    async def _drain(self, key: tuple[int, int], lane: _Lane) -> None:
        batch: list[tuple[np.ndarray, int, asyncio.Future[Found]]] = []
        try:
            while lane.waiting:
                batch, lane.waiting = [p for p in lane.waiting if not p[2].done()], []
                if not batch:
                    continue
                queries = np.stack([query for query, _, _ in batch])
                k = max(k for _, k, _ in batch)
                self.batches += 1
                self.probes += len(batch)
                try:
                    found = await anyio.to_thread.run_sync(
                        functools.partial(
                            lane.index.search_many, queries, k, ef_search=lane.ef_search
                        )
                    )
                except Exception as exc:  # every probe of the batch gets the error
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, want, future), (ids, scores) in zip(batch, found, strict=True):
                    if not future.done():
                        future.set_result((ids[:want], scores[:want]))
                batch = []
        finally:  # cancelled (shutdown): nobody may wait for an answer that never comes
            self._lanes.pop(key, None)
            for _, _, future in batch + lane.waiting:
                if not future.done():
                    future.cancel()
