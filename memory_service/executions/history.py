"""Reading an execution's history: its lineage and the state at any step.

``lineage_segments`` turns an execution and its ancestors into the seq ranges
whose rows live in each of them, which is how a fork shares its parent's steps
without copying them. ``HistoryReader.state_at`` rebuilds the state after a step
from the last keyframe at or before it plus at most ``keyframe_interval - 1``
patches, in one query; rebuilt states are kept in a small byte-bounded LRU keyed
by (the execution that holds the step, seq), which is exact because steps are
never changed once written. A rebuild starts from a cached state of one of the
64 steps before it when there is one, so walking a timeline step by step costs
one patch per step. The head each execution was last appended to from this process
is remembered too, so the next append can go straight to the write; for the
executions appended to most recently, the head state is held decoded as well and
handed to the next append of the execution (to one taker, which may change it).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from memory_service.errors import NotFound
from memory_service.executions import repository as repo
from memory_service.executions import states
from memory_service.executions import steps_repository as step_rows
from memory_service.executions.models import INITIAL_STATE, Execution
from memory_service.executions.repository import Conn, Segment

NEAREST = 64  # how far back a rebuild looks for a cached state to start from
# decoded head states held for the next append: the most recent executions, small states
HELD_STATES = 64
HELD_STATE_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class HeadState:
    """The state after an append: encoded (for the cache) and the value itself;
    ``owned`` when nothing outside the service references it (a state the service
    built by patching), so that the next append may change it in place."""

    encoded: bytes
    value: Any
    owned: bool


class StateCache:
    """An LRU of encoded states, bounded by their total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[uuid.UUID, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[uuid.UUID, int], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


def lineage_segments(chain: list[Execution], head_seq: int) -> list[Segment]:
    """Where each seq range of the first execution's history is stored.

    ``chain`` is the execution followed by its ancestors (the root last); the
    result covers seqs 1..head_seq, nearest execution first.
    """
    segments: list[Segment] = []
    hi = head_seq
    for execution in chain:
        lo = execution.fork_seq or 0
        if lo < hi:
            segments.append(Segment(uuid.UUID(execution.id), lo, hi))
        hi = min(hi, lo)
        if hi == 0:
            break
    return segments


def owner_of(segments: list[Segment], seq: int) -> uuid.UUID:
    for segment in segments:
        if segment.lo < seq <= segment.hi:
            return segment.execution_id
    raise NotFound(f"step {seq} does not exist")


class HistoryReader:
    def __init__(self, cache: StateCache, *, max_heads: int = 10_000) -> None:
        self.cache = cache
        # the head this process last wrote for each execution: a guess that lets the
        # next append skip reading it (the append statement checks it under the lock)
        self._heads: OrderedDict[uuid.UUID, tuple[uuid.UUID, Execution]] = OrderedDict()
        self._max_heads = max_heads
        self._held: OrderedDict[uuid.UUID, tuple[int, Any]] = OrderedDict()
        self._heads_lock = threading.Lock()

    def known_head(self, tid: uuid.UUID, eid: uuid.UUID) -> tuple[Execution, Any] | None:
        """A copy of the execution as this process last wrote it and its head state,
        when both are still known; None otherwise. The state is the caller's to change:
        the one held decoded (taken, so a concurrent append decodes its own) or a fresh
        decoding of the cached text."""
        with self._heads_lock:
            known = self._heads.get(eid)
            held = self._held.pop(eid, None)
        if known is None or known[0] != tid:
            return None
        execution = copy.copy(known[1])
        if held is not None and held[0] == execution.head_seq:
            return execution, held[1]
        encoded = self.cache.get((eid, execution.head_seq))
        if encoded is None:
            return None
        return execution, states.decode(encoded)

    def remember_head(self, tid: uuid.UUID, execution: Execution, head: HeadState) -> None:
        """After a successful append: the new head and its state (an owned value is the
        history's from now on)."""
        eid = uuid.UUID(execution.id)
        self.cache.put((eid, execution.head_seq), head.encoded)
        with self._heads_lock:
            self._heads[eid] = (tid, copy.copy(execution))
            self._heads.move_to_end(eid)
            while len(self._heads) > self._max_heads:
                self._heads.popitem(last=False)
            if head.owned and len(head.encoded) <= HELD_STATE_BYTES:
                self._held[eid] = (execution.head_seq, head.value)
                self._held.move_to_end(eid)
                while len(self._held) > HELD_STATES:
                    self._held.popitem(last=False)
            else:
                self._held.pop(eid, None)

    def forget_head(self, eid: uuid.UUID) -> None:
        with self._heads_lock:
            self._heads.pop(eid, None)
            self._held.pop(eid, None)

    async def segments(self, conn: Conn, tid: uuid.UUID, execution: Execution) -> list[Segment]:
        if execution.parent_id is None:
            if execution.head_seq == 0:
                return []
            return [Segment(uuid.UUID(execution.id), 0, execution.head_seq)]
        chain = await repo.ancestors(conn, tid, uuid.UUID(execution.id))
        return lineage_segments(chain, execution.head_seq)

    async def state_at(self, conn: Conn, segments: list[Segment], seq: int) -> Any:
        """A fresh copy of the state after step ``seq`` (0: the initial state)."""
        if seq == 0:
            return states.copy(INITIAL_STATE)
        key = (owner_of(segments, seq), seq)
        cached = self.cache.get(key)
        if cached is not None:
            return states.decode(cached)
        # a state rebuilt a few steps earlier saves the patches before it (stepping
        # through a timeline then costs one patch per step, not up to a keyframe's worth)
        start, state = self._nearest_before(segments, seq)
        rows = await step_rows.read_states(conn, segments, seq, from_seq=start + 1 if start else None)
        if not rows or rows[-1][0] != seq or (rows[0][1] is None and rows[0][0] != start + 1):
            raise NotFound(f"step {seq} does not exist")
        if rows[0][1] is not None:  # a keyframe at or after the cached state
            state = states.decode(rows[0][1])
            rows = rows[1:]
        for _, _, patch in rows:
            state = states.apply_in_place(state, states.decode(patch or "[]"), "stored patch")
        self.cache.put(key, states.encode(state))
        return state

    def _nearest_before(self, segments: list[Segment], seq: int) -> tuple[int, Any]:
        """(seq, state) of the nearest cached state among the NEAREST steps before
        ``seq``, or (0, None)."""
        for earlier in range(seq - 1, max(0, seq - NEAREST) - 1, -1):
            if earlier == 0:
                break
            cached = self.cache.get((owner_of(segments, earlier), earlier))
            if cached is not None:
                return earlier, states.decode(cached)
        return 0, None

    def remember(self, segments: list[Segment], seq: int, encoded: bytes) -> None:
        self.cache.put((owner_of(segments, seq), seq), encoded)
