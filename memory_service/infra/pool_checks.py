"""The pool's check of a connection before lending it, skipped while it is fresh.

Checking every connection on the way out of the pool (an empty query) costs a
database round trip per request: on a short write that is as much as the write
itself. A connection given back moments ago was working moments ago, so only one
that sat idle longer than ``idle_s`` is checked. A connection that broke in that
window (the database restarted) fails the one request that drew it with 503, and
the pool replaces it on its return, as it replaces any broken connection.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


class CheckWhenIdle:
    """``check`` and ``reset`` callbacks for an ``AsyncConnectionPool``."""

    def __init__(self, idle_s: float = 1.0) -> None:
        self.idle_s = idle_s
        self._returned: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        """Called by the pool when a connection comes back."""
        self._returned[conn] = time.monotonic()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        """Called by the pool before it lends a connection; raises when it is broken."""
        returned = self._returned.get(conn)
        if returned is not None and time.monotonic() - returned < self.idle_s:
            return
        await AsyncConnectionPool.check_connection(conn)
