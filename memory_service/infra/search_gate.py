"""How many searches of one tenant run at once: the cores shared fairly, none left idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any


class TenantGate:
    """At most ``width`` searches of one tenant run at once while another tenant has
    searches too; a tenant alone may run up to ``burst``. The rest wait their turn.

    A search is CPU work (scoring in FAISS, BM25 in the keyword index, fusion) spread over
    worker threads. A tenant's in-flight share bounds its requests, but eight searches in
    flight still keep eight threads busy on a two-core box, and another tenant's one
    search queues behind them for the cores: measured, a served 32-connection flood moved
    another tenant's search p95 to 13x its baseline with the share alone, and 1.3x with
    this gate at the core count. With ``burst`` above the width the gate conserves work:
    a tenant searching alone runs more at once (flat-index probes then gather into
    batches), and the moment another tenant searches the first is held to ``width``
    again (its searches already running finish; they take milliseconds). Off by
    default: where probes are graph walks answered on the event loop, more at once only
    queue there (measured: fewer searches/s). Waiting here costs nothing but the
    request's place, which the share already holds; nothing is refused. ``width`` 0
    switches the gate off.
    """

    def __init__(self, width: int, burst: int | None = None) -> None:
        self.width = width
        self.burst = max(width, burst if burst is not None else width)
        self._lanes: dict[Hashable, _Lane] = {}

    def _limit(self) -> int:
        return self.burst if len(self._lanes) <= 1 else self.width

    @contextlib.asynccontextmanager
    async def turn(self, tenant: Hashable) -> Any:
        if self.width <= 0:
            yield
            return
        lane = self._lanes.get(tenant)
        if lane is None:
            # with another tenant here, nobody is alone any more: bursts end as the
            # searches already running finish
            lane = self._lanes[tenant] = _Lane()
        lane.users += 1
        try:
            while lane.running >= self._limit():
                waiter = asyncio.get_running_loop().create_future()
                lane.waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter in lane.waiters:
                        lane.waiters.remove(waiter)
                    else:  # woken, then cancelled: the turn goes to the next in line
                        _wake(lane, self._limit())
                    raise
            lane.running += 1
            try:
                yield
            finally:
                lane.running -= 1
                _wake(lane, self._limit())
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[tenant]  # an idle tenant keeps no lane
                if len(self._lanes) == 1:  # the one left is alone now: its burst is back
                    for other in self._lanes.values():
                        _wake(other, self.burst)


@dataclass
class _Lane:
    users: int = 0  # searches running or waiting
    running: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


def _wake(lane: _Lane, limit: int) -> None:
    """Let as many waiters try again as the limit has room for."""
    room = limit - lane.running
    while room > 0 and lane.waiters:
        waiter = lane.waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            room -= 1
