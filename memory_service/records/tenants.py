"""Tenants and their API keys.

A key looks like ``mk_<prefix>_<secret>``. Only its SHA-256 hash is stored; the
prefix identifies it for look-up and revocation. Checking a key does the same work
whether its prefix exists or not (hash, look-up, constant-time compare), so the
answer's timing does not reveal which prefixes are in use. ``authenticate`` keeps a short
in-process cache so that hot paths do not pay a database round trip per request;
revocation in this process clears it at once, other processes within
``auth_cache_seconds``. Keys are looked up on the primary; while it is down, on a
standby (when there are any), so held searches keep answering. ``known_tenant`` reads
the same cache, expired entries included, to tell admission control whose a request
is before its body is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from memory_service.errors import (
    FieldError,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.replicas import RoutedPool, primary_reads, standby_reads

_KEY = re.compile(r"^mk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})$")
_PREFIX = re.compile(r"^[0-9a-f]{12}$")
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_prefix(api_key: str) -> str | None:
    """The public part of a well-formed key (what revocation names it by), else None."""
    match = _KEY.match(api_key or "")
    return match[1] if match else None


# what an unknown prefix's key is compared against: the hash of no valid key
_NO_KEY_HASH = _hash("mk_000000000000_no-key-has-this-hash")


def new_api_key() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"mk_{prefix}_{secrets.token_urlsafe(32)}"


class TenantService:
    def __init__(self, pool: AsyncConnectionPool, *, auth_cache_seconds: float = 5.0) -> None:
        self._pool = pool
        self._ttl = auth_cache_seconds
        self._cache: dict[bytes, tuple[uuid.UUID, float]] = {}
        self._lookups: dict[bytes, asyncio.Future[uuid.UUID]] = {}

    async def create_tenant(self, name: str) -> tuple[Tenant, str]:
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > MAX_NAME:
            raise InvalidInput(
                "tenant name is required",
                errors=[FieldError("name", f"must be 1 to {MAX_NAME} characters")],
            )
        prefix, key = new_api_key()
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO tenants (name) VALUES (%s) RETURNING id, name, created_at", (name,)
            )
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO api_keys (prefix, tenant_id, key_hash) VALUES (%s, %s, %s)",
                (prefix, row[0], _hash(key)),
            )
        self._remember(_hash(key), row[0])
        return Tenant(str(row[0]), row[1], row[2]), key

    async def create_key(self, tenant_id: str) -> str:
        tid = parse_uuid(tenant_id, "tenant_id")
        prefix, key = new_api_key()
        async with wrap_db_errors(), self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO api_keys (prefix, tenant_id, key_hash) "
                "SELECT %s, id, %s FROM tenants WHERE id = %s RETURNING prefix",
                (prefix, _hash(key), tid),
            )
            if await cur.fetchone() is None:
                raise NotFound(f"tenant {tenant_id} does not exist")
        self._remember(_hash(key), tid)
        return key

    async def revoke_key(self, tenant_id: str, prefix: str) -> None:
        tid = parse_uuid(tenant_id, "tenant_id")
        if not _PREFIX.match(prefix):
            raise NotFound(f"no key with prefix {prefix!r}")
        async with wrap_db_errors(), self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() "
                "WHERE prefix = %s AND tenant_id = %s AND revoked_at IS NULL RETURNING key_hash",
                (prefix, tid),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no active key with prefix {prefix!r} for this tenant")
        self._cache.pop(bytes(row[0]), None)

    async def _key_row(self, prefix: str) -> tuple[Any, ...] | None:
        async with wrap_db_errors(), self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT tenant_id, key_hash FROM api_keys WHERE prefix = %s AND revoked_at IS NULL",
                (prefix,),
            )
            return await cur.fetchone()

    async def authenticate(self, api_key: str) -> uuid.UUID:
        """The tenant id that owns ``api_key``; ``Unauthenticated`` otherwise."""
        match = _KEY.match(api_key or "")
        if not match:
            raise Unauthenticated("missing or malformed API key")
        digest = _hash(api_key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        # the requests of a key that arrive together (a client's first burst after a
        # start) share one database look-up
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(match[1], digest))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda done: self._looked_up(digest, done))
        return await asyncio.shield(pending)

    def lookup_pending(self, api_key: str) -> bool:
        return _hash(api_key) in self._lookups

    async def _look_up(self, prefix: str, digest: bytes) -> uuid.UUID:
        try:
            with primary_reads():  # a key made a moment ago is not on a standby yet
                row = await self._key_row(prefix)
        except Unavailable:
            if not isinstance(self._pool, RoutedPool):
                raise
            with standby_reads():  # the primary is down: a standby still knows the keys
                row = await self._key_row(prefix)
        # an unknown prefix is compared against a stand-in hash, so that it costs what a
        # known prefix with a wrong secret costs and the time does not tell them apart
        stored = _NO_KEY_HASH if row is None else bytes(row[1])
        if not hmac.compare_digest(stored, digest) or row is None:
            raise Unauthenticated("unknown or revoked API key")
        tenant_id: uuid.UUID = row[0]
        self._remember(digest, tenant_id)
        return tenant_id

    def _looked_up(self, digest: bytes, done: asyncio.Future[uuid.UUID]) -> None:
        self._lookups.pop(digest, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter has it, or none was left to

    @staticmethod
    def is_key_shaped(api_key: str) -> bool:
        return _KEY.match(api_key) is not None

    def known_tenant(self, api_key: str) -> uuid.UUID | None:
        """The tenant this process last saw ``api_key`` authenticate as, without the
        database: a guess for admission control (a hash and a dict look-up), never a
        substitute for ``authenticate``. A revoked key is forgotten at once here."""
        if not api_key.startswith("mk_"):
            return None
        cached = self._cache.get(_hash(api_key))
        return cached[0] if cached else None

    def _remember(self, digest: bytes, tenant_id: uuid.UUID) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (tenant_id, time.monotonic() + self._ttl)


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """A UUID from a path or body; a malformed one is a 422 naming the field."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        shown = str(value)[:64]
        raise InvalidInput(
            f"{field} {shown!r} is not a valid id",
            errors=[FieldError(field, "must be a UUID")],
        ) from None
