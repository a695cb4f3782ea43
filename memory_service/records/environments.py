"""Environments: named configurations that tasks run in, with write-only secrets.

``EnvironmentService`` validates input, keeps names unique per tenant (409),
checks ``If-Match`` versions and refuses to delete an environment that tasks
still use unless forced (the tasks then lose their environment). Secrets are
stored but never read back: every read returns only their names, so no
response, log line or event can carry a secret value. The SQL lives here, next
to these rules, as in ``tenants.py``.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings, SettingsError
from memory_service.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from memory_service.infra.db import connect_sync, wrap_db_errors, wrap_db_errors_sync
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.infra.secret_box import SecretBox, load_secret_box
from memory_service.records.task_models import MAX_TEXT
from memory_service.records.tenants import parse_uuid
from memory_service.validation import check_json_object, check_text

MAX_NAME = 200
MAX_SECRETS = 100
MAX_SECRET_VALUE = 16 * 1024
MAX_LIST_LIMIT = 1000
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

# the columns an export carries and an import or a migration writes as given (the
# secret values travel only where an admin asked for them; see the transfer package)
TABLE = "environments"
COPY_COLUMNS = (
    "id", "name", "description", "config", "secrets", "is_active", "created_at", "updated_at",
    "version",
)
# secret values are selected only as their key names
COLUMNS = sql.SQL(
    "id, name, description, config, "
    "ARRAY(SELECT jsonb_object_keys(secrets) ORDER BY 1) AS secret_names, "
    "is_active, created_at, updated_at, version, seq"
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Environment:
    id: str
    name: str
    description: str | None
    config: dict[str, Any]
    secret_names: list[str]
    is_active: bool
    created_at: datetime
    updated_at: datetime
    version: int
    seq: int = 0


def check_secrets(value: Any, where: str = "secrets") -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{where} must be an object of names to strings", errors=[FieldError(where, "object")]
        )
    if len(value) > MAX_SECRETS:
        raise PayloadTooLarge(
            f"at most {MAX_SECRETS} secrets", errors=[FieldError(where, "too many")]
        )
    for name, secret in value.items():
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            raise InvalidInput(
                f"{where} has an invalid name (letters, digits, _ . -; up to 128)",
                errors=[FieldError(where, "invalid secret name")],
            )
        # the message never quotes the value
        if secret is not None and (not isinstance(secret, str) or "\x00" in secret):
            raise InvalidInput(
                f"{where}.{name} must be a string", errors=[FieldError(f"{where}.{name}", "string")]
            )
        if isinstance(secret, str) and len(secret) > MAX_SECRET_VALUE:
            raise PayloadTooLarge(
                f"{where}.{name} is too long", errors=[FieldError(f"{where}.{name}", "too long")]
            )
    return value


class EnvironmentService:
    def __init__(
        self, pool: AsyncConnectionPool, cursors: CursorCodec, box: SecretBox | None
    ) -> None:
        self.pool = pool
        self.cursors = cursors
        self.box = box

    def _seal(self, secrets: dict[str, str]) -> dict[str, str]:
        if not secrets:
            return {}
        if self.box is None:
            raise Forbidden(
                "secrets are disabled: set MEMORY_SECRETS_KEY so they can be encrypted at rest"
            )
        return {name: self.box.seal(value) for name, value in secrets.items()}

    async def create(self, tenant_id: uuid.UUID, fields: dict[str, Any]) -> Environment:
        row = self._validate(fields, creating=True)
        secrets = self._seal({k: v for k, v in row.pop("secrets", {}).items() if v is not None})
        async with wrap_db_errors(), self.pool.connection() as conn:
            try:
                cur = await conn.cursor(row_factory=dict_row).execute(
                    sql.SQL(
                        "INSERT INTO environments (tenant_id, name, description, config, secrets, "
                        "is_active) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {out}"
                    ).format(out=COLUMNS),
                    (
                        tenant_id,
                        row["name"],
                        row.get("description"),
                        Jsonb(row.get("config", {})),
                        Jsonb(secrets),
                        row.get("is_active", True),
                    ),
                )
            except pg_errors.UniqueViolation:
                raise Conflict(f"an environment named {row['name']!r} already exists") from None
            return _environment(await cur.fetchone())

    async def update(
        self, tenant_id: uuid.UUID, env_id: str, fields: dict[str, Any], if_match: int | None
    ) -> Environment:
        changes = self._validate(fields, creating=False)
        if not changes:
            raise InvalidInput("nothing to update", errors=[FieldError("body", "no field given")])
        tid, eid = tenant_id, parse_uuid(env_id, "id")
        sets: list[sql.Composable] = []
        params: list[Any] = []
        for name in ("name", "description", "is_active"):
            if name in changes:
                sets.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
                params.append(changes[name])
        if "config" in changes:
            sets.append(sql.SQL("config = %s"))
            params.append(Jsonb(changes["config"]))
        if "secrets" in changes:
            # a patch merges secrets by name; a null value removes that secret
            keep = self._seal({k: v for k, v in changes["secrets"].items() if v is not None})
            drop = [k for k, v in changes["secrets"].items() if v is None]
            sets.append(sql.SQL("secrets = (secrets - %s::text[]) || %s"))
            params += [drop, Jsonb(keep)]
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL(
                    "SELECT {cols} FROM environments WHERE tenant_id = %s AND id = %s FOR UPDATE"
                ).format(cols=COLUMNS),
                (tid, eid),
            )
            found = await cur.fetchone()
            if found is None:
                raise NotFound(f"environment {env_id} not found")
            if if_match is not None and found["version"] != if_match:
                raise PreconditionFailed(
                    f"environment {env_id} is at version {found['version']}, not {if_match}",
                    current=_environment(found),
                )
            try:
                async with conn.transaction():
                    cur2 = await conn.cursor(row_factory=dict_row).execute(
                        sql.SQL(
                            "UPDATE environments SET {sets}, updated_at = clock_timestamp(), "
                            "version = version + 1 WHERE tenant_id = %s AND id = %s "
                            "RETURNING {out}"
                        ).format(sets=sql.SQL(", ").join(sets), out=COLUMNS),
                        [*params, tid, eid],
                    )
            except pg_errors.UniqueViolation:
                raise Conflict(f"an environment named {changes['name']!r} already exists") from None
            return _environment(await cur2.fetchone())

    async def delete(
        self, tenant_id: uuid.UUID, env_id: str, *, force: bool = False, if_match: int | None = None
    ) -> int:
        """Delete; returns how many tasks lost this environment (only when forced)."""
        tid, eid = tenant_id, parse_uuid(env_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL(
                    "SELECT {cols} FROM environments WHERE tenant_id = %s AND id = %s FOR UPDATE"
                ).format(cols=COLUMNS),
                (tid, eid),
            )
            found = await cur.fetchone()
            if found is None:
                raise NotFound(f"environment {env_id} not found")
            if if_match is not None and found["version"] != if_match:
                raise PreconditionFailed(
                    f"environment {env_id} is at version {found['version']}, not {if_match}",
                    current=_environment(found),
                )
            counted = await conn.execute(
                "SELECT count(*) FROM tasks WHERE tenant_id = %s AND environment_id = %s",
                (tid, eid),
            )
            row = await counted.fetchone()
            in_use = int(row[0]) if row else 0
            if in_use and not force:
                raise Conflict(
                    f"environment {env_id} is used by {in_use} task(s); "
                    "delete with ?force=true to detach them"
                )
            if in_use:
                await conn.execute(
                    "UPDATE tasks SET environment_id = NULL, updated_at = clock_timestamp(), "
                    "version = version + 1 WHERE tenant_id = %s AND environment_id = %s",
                    (tid, eid),
                )
            await conn.execute(
                "DELETE FROM environments WHERE tenant_id = %s AND id = %s", (tid, eid)
            )
        return in_use

    async def get(self, tenant_id: uuid.UUID, env_id: str) -> Environment:
        tid, eid = tenant_id, parse_uuid(env_id, "id")
        async with wrap_db_errors(), self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL("SELECT {out} FROM environments WHERE tenant_id = %s AND id = %s").format(
                    out=COLUMNS
                ),
                (tid, eid),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"environment {env_id} not found")
        return _environment(row)

    async def list(
        self,
        tenant_id: uuid.UUID,
        *,
        is_active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Environment]:
        """Oldest first, keyset-paged by seq."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput("limit out of range", errors=[FieldError("limit", "1..1000")])
        after = 0
        if cursor:
            position = self.cursors.decode(cursor, "environments", tenant_id)
            if not isinstance(position, int):
                raise InvalidInput(
                    "cursor is not valid for this listing",
                    errors=[FieldError("cursor", "malformed")],
                )
            after = position
        where: sql.Composable = sql.SQL("tenant_id = %s AND seq > %s")
        params: list[Any] = [tenant_id, after]
        if is_active is not None:
            where = sql.SQL("{} AND is_active = %s").format(where)
            params.append(is_active)
        async with wrap_db_errors(), self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                sql.SQL(
                    "SELECT {out} FROM environments WHERE {where} ORDER BY seq LIMIT %s"
                ).format(out=COLUMNS, where=where),
                [*params, limit + 1],
            )
            rows = [_environment(r) for r in await cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            self.cursors.encode("environments", tenant_id, rows[-1].seq) if more and rows else None
        )
        return Page(rows, next_cursor)

    def _validate(self, fields: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if creating or "name" in fields:
            name = check_text(fields.get("name"), "name", MAX_NAME, required=True)
            out["name"] = str(name).strip()
        if "description" in fields:
            out["description"] = check_text(fields["description"], "description", MAX_TEXT)
        if "config" in fields:
            out["config"] = check_json_object(fields["config"], "config")
        if "secrets" in fields:
            out["secrets"] = check_secrets(fields["secrets"])
        if "is_active" in fields:
            if not isinstance(fields["is_active"], bool):
                raise InvalidInput(
                    "is_active must be a boolean", errors=[FieldError("is_active", "boolean")]
                )
            out["is_active"] = fields["is_active"]
        return out


def _environment(row: dict[str, Any] | None) -> Environment:
    assert row is not None
    return Environment(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        config=row["config"],
        secret_names=list(row["secret_names"] or []),
        is_active=row["is_active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        seq=row["seq"],
    )


# -- secrets at rest: start-up check and re-encryption (sync, like migrations) ----------
_PLAIN = "EXISTS (SELECT 1 FROM jsonb_each_text(secrets) s WHERE s.value NOT LIKE 'fernet:%%')"


def secrets_exist(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM environments WHERE secrets <> '{}')").fetchone()
    return bool(row and row[0])


def reseal_secrets(conn: psycopg.Connection[Any], box: SecretBox, *, everything: bool) -> int:
    """Seal plain-text values (``everything``: re-seal all under the first key); rows changed."""
    where = "secrets <> '{}'" if everything else _PLAIN
    changed = 0
    with conn.transaction():
        rows = conn.execute(
            sql.SQL("SELECT id, secrets FROM environments WHERE {} FOR UPDATE").format(
                sql.SQL(where)
            )
        ).fetchall()
        for env_id, secrets in rows:
            sealed = {
                name: box.reseal(value) if isinstance(value, str) else value
                for name, value in secrets.items()
            }
            conn.execute(
                "UPDATE environments SET secrets = %s WHERE id = %s", (Jsonb(sealed), env_id)
            )
            changed += 1
    return changed


async def ids_by_name(conn: Any, tenant_id: uuid.UUID, names: list[str]) -> dict[str, str]:
    """The ids of this tenant's environments with these names."""
    cur = await conn.execute(
        "SELECT name, id::text FROM environments WHERE tenant_id = %s AND name = ANY(%s)",
        (tenant_id, names),
    )
    return {r[0]: r[1] for r in await cur.fetchall()}


async def detach_tasks(conn: Any, tenant_id: uuid.UUID, env_ids: list[str]) -> None:
    """Tasks that use these environments lose them (as with a forced delete)."""
    await conn.execute(
        "UPDATE tasks SET environment_id = NULL, updated_at = clock_timestamp(), "
        "version = version + 1 WHERE tenant_id = %s AND environment_id = ANY(%s::uuid[])",
        (tenant_id, env_ids),
    )


def check_secrets_at_rest(url: str, settings: Settings) -> SecretBox | None:
    """The secret box; plain-text secrets left from before are sealed with it.

    Without a key (an external database and no ``MEMORY_SECRETS_KEY``) the service
    refuses to start once any secret is stored: it could neither protect new ones
    nor tell a reader why old ones stopped working.
    """
    box = load_secret_box(settings)
    with wrap_db_errors_sync(), connect_sync(url) as conn:
        if box is not None:
            sealed = reseal_secrets(conn, box, everything=False)
            if sealed:
                log.info("sealed the plain-text secrets of %d environment(s)", sealed)
        elif secrets_exist(conn):
            raise SettingsError(
                "environment secrets are stored but MEMORY_SECRETS_KEY is not set; set it to "
                "the key they were encrypted with (see docs/operations.md)"
            )
    return box
