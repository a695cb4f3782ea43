"""Console sessions and migration uploads: the SQL of ``console_sessions`` and ``console_uploads``.

Any process of a fleet answers any console request, so neither lives in a process's
memory. A session id is 32 random bytes that only the browser holds; the table keeps
its SHA-256. A session names the API key it was opened with, by prefix, and loads
only while that key is unrevoked (a join, not a cache), so revoking a key ends its
sessions on every replica at once. Sessions slide: a use in the last part of their
life pushes the expiry out again. An upload (a browser export waiting for its dry
run to be confirmed) belongs to one session and lives for an hour; its content,
secret values included, is sealed with the secrets key when one is configured.
``sweep_console_sessions`` is the background loop that deletes what expired.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from memory_service.config import SettingsError
from memory_service.errors import MemoryServiceError
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.secret_box import SecretBox
from memory_service.records.tenants import key_prefix

log = logging.getLogger(__name__)

SESSION_SECONDS = 8 * 3600
UPLOAD_SECONDS = 3600
RENEW_AFTER_SECONDS = 300  # a session is written back at most this often
SWEEP_INTERVAL_SECONDS = 300.0
MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    session_id: str
    tenant_id: uuid.UUID
    csrf_token: str


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class ConsoleSessionStore:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        box: SecretBox | None,
        *,
        session_seconds: int = SESSION_SECONDS,
        upload_seconds: int = UPLOAD_SECONDS,
    ) -> None:
        self._pool = pool
        self._box = box
        self.session_seconds = session_seconds
        self.upload_seconds = upload_seconds
        self.swept = 0  # sessions and uploads the sweeper deleted, for the logs and tests

    async def open(self, api_key: str, *, replacing: str | None = None) -> ConsoleSession | None:
        """A new session for a valid key (None when the key is unknown or revoked).

        Every sign-in gets a fresh id, and ``replacing`` (the id the browser held
        before) is ended, so an id planted in a browser is never promoted."""
        prefix = key_prefix(api_key)
        if prefix is None:
            return None
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            if replacing:
                await conn.execute(
                    "DELETE FROM console_sessions WHERE id_hash = %s", (_digest(replacing),)
                )
            cur = await conn.execute(
                "INSERT INTO console_sessions (id_hash, key_prefix, csrf_token, expires_at) "
                "SELECT %s, prefix, %s, now() + make_interval(secs => %s) FROM api_keys "
                "WHERE prefix = %s AND key_hash = %s AND revoked_at IS NULL RETURNING "
                "(SELECT tenant_id FROM api_keys WHERE prefix = %s)",
                (
                    _digest(session_id),
                    csrf,
                    self.session_seconds,
                    prefix,
                    hashlib.sha256(api_key.encode()).digest(),
                    prefix,
                ),
            )
            row = await cur.fetchone()
        return ConsoleSession(session_id, row[0], csrf) if row else None

    async def load(self, session_id: str) -> ConsoleSession | None:
        """The live session with this id: unexpired, its key unrevoked."""
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        digest = _digest(session_id)
        async with wrap_db_errors(), self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.tenant_id, s.csrf_token, "
                "s.expires_at < now() + make_interval(secs => %s) AS renew "
                "FROM console_sessions s JOIN api_keys k ON k.prefix = s.key_prefix "
                "WHERE s.id_hash = %s AND s.expires_at > now() AND k.revoked_at IS NULL",
                (self.session_seconds - RENEW_AFTER_SECONDS, digest),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            if row[2]:
                await conn.execute(
                    "UPDATE console_sessions SET expires_at = now() + make_interval(secs => %s) "
                    "WHERE id_hash = %s",
                    (self.session_seconds, digest),
                )
        return ConsoleSession(session_id, row[0], row[1])

    async def close(self, session_id: str) -> None:
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return
        async with wrap_db_errors(), self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM console_sessions WHERE id_hash = %s", (_digest(session_id),)
            )

    async def save_upload(self, session: ConsoleSession, payload: Any) -> str:
        """Keeps a parsed export for this session; returns its random id."""
        upload_id = secrets.token_urlsafe(16)
        text = json.dumps(payload)
        stored = self._box.seal(text) if self._box is not None else text
        async with wrap_db_errors(), self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO console_uploads (session_hash, upload_id, payload, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (_digest(session.session_id), upload_id, stored, self.upload_seconds),
            )
        return upload_id

    async def upload(self, session: ConsoleSession, upload_id: str) -> Any | None:
        """This session's unexpired upload with this id, parsed; None otherwise."""
        if not upload_id or len(upload_id) > MAX_ID_CHARS:
            return None
        async with wrap_db_errors(), self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT payload FROM console_uploads "
                "WHERE session_hash = %s AND upload_id = %s AND expires_at > now()",
                (_digest(session.session_id), upload_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        try:
            text = self._box.open(row[0]) if self._box is not None else row[0]
        except SettingsError:
            log.warning("a console upload does not open with the configured secrets key")
            return None
        return json.loads(text)

    async def drop_upload(self, session: ConsoleSession, upload_id: str) -> None:
        async with wrap_db_errors(), self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM console_uploads WHERE session_hash = %s AND upload_id = %s",
                (_digest(session.session_id), upload_id),
            )

    async def sweep(self) -> int:
        """Deletes expired uploads and sessions, and sessions of revoked keys."""
        async with wrap_db_errors(), self._pool.connection() as conn, conn.transaction():
            uploads = await conn.execute("DELETE FROM console_uploads WHERE expires_at <= now()")
            sessions = await conn.execute(
                "DELETE FROM console_sessions s USING api_keys k WHERE k.prefix = s.key_prefix "
                "AND (s.expires_at <= now() OR k.revoked_at IS NOT NULL)"
            )
            removed = max(uploads.rowcount, 0) + max(sessions.rowcount, 0)
        self.swept += removed
        return removed


async def sweep_console_sessions(
    store: ConsoleSessionStore, interval_s: float = SWEEP_INTERVAL_SECONDS
) -> None:
    """The background loop: a sweep every ``interval_s``; a failed one is logged and retried."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = await store.sweep()
            if removed:
                log.info("console session sweep removed %d expired rows", removed)
        except MemoryServiceError as exc:
            log.warning("console session sweep skipped a run: %s", exc.detail)
