"""Live wake-ups for event streams, across every process on the database.

One dedicated connection per process runs ``LISTEN memory_events`` (or the
channel it is given: workflows wake their claimers and the change feed its streams
the same way); each
notification names a tenant, and ``EventFanout`` wakes that tenant's streams in
this process. A wake-up only says "look again": streams read the rows
themselves, so a lost or coalesced notification costs latency, never data. When
the listening connection breaks it reconnects with back-off and then wakes every
stream once, covering whatever was committed while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from typing import Any

import psycopg
from psycopg import sql

from memory_service.events.store import CHANNEL
from memory_service.infra.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)


class Subscription:
    """One stream's wake-up flag; ``wait`` returns False on timeout."""

    def __init__(self, fanout: EventFanout, topic: str) -> None:
        self.topic = topic  # as the notification payload spells it (a tenant id or a name)
        self._fanout = fanout
        self._flag = asyncio.Event()
        self.closed = False

    def wake(self) -> None:
        self._flag.set()

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._flag.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._fanout.unsubscribe(self)


class EventFanout:
    def __init__(
        self, database_url: str, *, supervisor: Supervisor, channel: str = CHANNEL, name: str
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._supervisor = supervisor
        self.name = name  # the supervised loop's
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._loop: Loop | None = None
        self._listening = asyncio.Event()
        self.connected = False
        self.notifications = 0

    def subscribe(self, topic: uuid.UUID | str) -> Subscription:
        """Wake-ups for one notification payload: a tenant id, or a name a channel uses."""
        sub = Subscription(self, str(topic))
        self._subscribers[sub.topic].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.topic]

    @property
    def stream_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def wake(self, topic: uuid.UUID | str | None = None) -> None:
        targets = (
            [s for subs in self._subscribers.values() for s in subs]
            if topic is None
            else list(self._subscribers.get(str(topic), ()))
        )
        for sub in targets:
            sub.wake()

    async def start(self, wait_seconds: float = 5.0) -> None:
        self._loop = self._supervisor.spawn(self.name, self._listen_forever)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), wait_seconds)

    async def close(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.closed = True
                sub.wake()
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None

    async def _listen_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except psycopg.Error as exc:
                log.warning("event fan-out cannot connect (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connected = True
                    self._listening.set()
                    delay = 0.2
                    self.wake()  # anything committed while we were not listening
                    async for notify in conn.notifies():
                        self.notifications += 1
                        self.wake(notify.payload)
            except psycopg.Error as exc:
                log.warning("event fan-out lost its connection (%s)", type(exc).__name__)
            finally:
                self.connected = False
            await asyncio.sleep(delay)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "streams": self.stream_count}
