"""Fair sharing between tenants: a request rate and concurrent slots per tenant.

``TenantLimiter`` holds one token bucket per tenant (``rate`` requests per second,
``burst`` at once) and counters of held slots per tenant and kind: ``"stream"``
for event streams, ``"long_poll"`` for requests that wait for something to
happen. A tenant over its rate gets ``RateLimited`` with the seconds until a token
is back; a tenant holding all its slots of a kind gets ``RateLimited`` too, since
a slot frees up only when one of its own open requests ends. The limiter is in
process memory: with several replicas each enforces its share of the limit.
It never waits and never touches the database, so refusing costs next to nothing.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from memory_service.errors import RateLimited

SLOT_KINDS = ("stream", "long_poll")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TenantLimiter:
    """Token buckets and slot counters per tenant (a plain class: it holds a lock)."""

    def __init__(
        self,
        *,
        rate: float,  # requests per second and tenant; 0 switches the rate limit off
        burst: int,
        slots: Mapping[str, int],  # kind -> concurrent slots per tenant (0: unlimited)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.slots = dict(slots)
        self.clock = clock
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._held: dict[tuple[uuid.UUID, str], int] = {}
        self._lock = threading.Lock()

    def admit(self, tenant_id: uuid.UUID) -> None:
        """Take one request token for ``tenant_id`` or raise ``RateLimited``."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                bucket = self._buckets[tenant_id] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / self.rate
        raise RateLimited(
            f"more than {self.rate:g} requests per second for this tenant",
            retry_after=max(1, math.ceil(wait)),
        )

    def hold(self, tenant_id: uuid.UUID, kind: str) -> Callable[[], None]:
        """Take a ``kind`` slot for the tenant; returns the function that gives it back."""
        limit = self.slots.get(kind, 0)
        key = (tenant_id, kind)
        with self._lock:
            held = self._held.get(key, 0)
            if limit and held >= limit:
                raise RateLimited(
                    f"this tenant already holds {held} open {kind.replace('_', ' ')} requests, "
                    f"its limit; close one first",
                    retry_after=1,
                )
            self._held[key] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            with self._lock:
                left = self._held.get(key, 1) - 1
                if left:
                    self._held[key] = left
                else:
                    self._held.pop(key, None)

        return release

    def held(self, tenant_id: uuid.UUID, kind: str) -> int:
        with self._lock:
            return self._held.get((tenant_id, kind), 0)
