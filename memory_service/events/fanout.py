"""Live wake-ups for event streams, across every process on the database.

One dedicated connection per process runs ``LISTEN memory_events`` (or the
channel it is given: workflows wake their claimers and the change feed its streams
the same way); each
notification names a tenant, and ``EventFanout`` wakes that tenant's streams in
this process. A wake-up only says "look again": streams read the rows
themselves, so a lost or coalesced notification costs latency, never data. When
the listening connection breaks it reconnects with back-off and then wakes every
stream once, covering whatever was committed while it was away.

A channel whose payloads say how much work became ready (``parse`` reads one into a
topic and a count) wakes only that many waiting subscribers, the longest waiting
first, instead of every one of them: a step made ready wakes one claimer, not a
herd whose other members each run an empty claim. A subscriber that leaves with
such a wake unused (it was busy claiming when the wake came, or it was cancelled)
hands it to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from memory_service.events.store import CHANNEL
from memory_service.infra.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)


# a payload read into the topic it wakes and how many of its subscribers (None: all),
# or None for a payload to ignore
Parse = Callable[[str], "tuple[str, int | None] | None"]


class Subscription:
    """One stream's wake-up flag; ``wait`` returns False on timeout."""

    def __init__(self, fanout: EventFanout, topics: tuple[str, ...]) -> None:
        # as the notification payloads spell them (a tenant id or a name)
        self.topics = topics
        self._fanout = fanout
        self._flag = asyncio.Event()
        self._counted = False  # woken by a counted wake not yet used
        self.closed = False

    @property
    def woken(self) -> bool:
        return self._flag.is_set()

    def wake(self, *, counted: bool = False) -> None:
        self._counted = self._counted or counted
        self._flag.set()

    def clear(self) -> None:
        self._counted = False
        self._flag.clear()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._flag.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._fanout.unsubscribe(self)
        if self._counted and self._flag.is_set() and not self.closed:
            self._counted = False
            for topic in self.topics:  # a wake this subscriber did not use: the next one's
                self._fanout.wake(topic, limit=1)


class EventFanout:
    def __init__(
        self,
        database_url: str,
        *,
        supervisor: Supervisor,
        channel: str = CHANNEL,
        name: str,
        parse: Parse | None = None,
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._supervisor = supervisor
        self._parse = parse
        self.name = name  # the supervised loop's
        # per topic, its subscribers in the order they came (a dict keeps it)
        self._subscribers: dict[str, dict[Subscription, None]] = defaultdict(dict)
        self._loop: Loop | None = None
        self._listening = asyncio.Event()
        self.connected = False
        self.notifications = 0
        self.woken = 0  # subscribers woken, all told

    def subscribe(self, topic: uuid.UUID | str, *more: str) -> Subscription:
        """Wake-ups for notification payloads: a tenant id, or a name a channel uses."""
        sub = Subscription(self, (str(topic), *more))
        for name in sub.topics:
            self._subscribers[name][sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for name in sub.topics:
            subs = self._subscribers.get(name)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self._subscribers[name]

    @property
    def stream_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def wake(self, topic: uuid.UUID | str | None = None, limit: int | None = None) -> int:
        """Wake a topic's subscribers (every topic's when None): all of them, or with
        ``limit`` that many of those not already woken, the longest waiting first.
        Returns how many were woken."""
        if topic is None:
            targets = {s: None for subs in self._subscribers.values() for s in subs}
            for sub in targets:
                sub.wake()
            self.woken += len(targets)
            return len(targets)
        subs = self._subscribers.get(str(topic))
        if not subs:
            return 0
        if limit is None:
            for sub in list(subs):
                sub.wake()
            self.woken += len(subs)
            return len(subs)
        woken = 0
        for sub in list(subs):
            if woken >= limit:
                break
            if not sub.woken:
                sub.wake(counted=True)
                woken += 1
        self.woken += woken
        return woken

    def deliver(self, payload: str) -> None:
        """A notification's payload: the topic it names, read by ``parse`` if given."""
        if self._parse is None:
            self.wake(payload)
            return
        target = self._parse(payload)
        if target is not None:
            self.wake(*target)

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
                        self.deliver(notify.payload)
            except psycopg.Error as exc:
                log.warning("event fan-out lost its connection (%s)", type(exc).__name__)
            finally:
                self.connected = False
            await asyncio.sleep(delay)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "streams": self.stream_count}
