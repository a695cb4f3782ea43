"""Data in and out: browser-storage migrations, and export/import of a tenant.

``POST /v1/migrations/browser-storage`` takes the browser's localStorage object
(``?dry_run=true`` only reports); ``GET /v1/migrations/{id}`` shows a job and
``POST /v1/migrations/{id}/rollback`` undoes it. ``GET /v1/export`` streams the
tenant as NDJSON and ``POST /v1/import`` streams it back. Secret values leave
only with ``include_secret_values=true`` and the admin token in
``X-Admin-Token``, on top of the tenant's own key.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Stream
from msgspec import Struct

from api.consistency import STANDBY_READS
from memory_service.config import Settings
from memory_service.errors import FieldError, Forbidden, InvalidInput
from memory_service.transfer.exporter import EXPORT_ORDER, ExportOptions
from memory_service.transfer.importer import ImportReport
from memory_service.transfer.jobs_store import MigrationJob
from memory_service.transfer.migration import MigrationReport, MigrationService
from memory_service.transfer.service import TransferService

NDJSON = "application/x-ndjson"
TYPE_NAMES = {
    "memories": "memory", "tasks": "task", "environments": "environment",
    "executions": "execution", "events": "event",
}


class RejectedOut(Struct):
    key: str
    pointer: str
    reason: str


class MigrationOut(Struct):
    id: str
    kind: str
    status: str
    total: dict[str, int]
    done: dict[str, int]
    outcome: dict[str, dict[str, int]]
    errors: list[dict[str, str]]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: MigrationJob) -> MigrationOut:
        return cls(job.id, job.kind, job.status, job.total, job.done, job.outcome, job.errors,
                   job.created_at, job.updated_at, job.finished_at)


class DryRunOut(Struct):
    dry_run: bool
    valid: bool
    counts: dict[str, int]
    actions: dict[str, dict[str, int]]
    rejected: list[RejectedOut]
    rejected_total: int
    ignored_keys: list[str]

    @classmethod
    def of(cls, r: MigrationReport) -> DryRunOut:
        rejected = [RejectedOut(x.key, x.pointer, x.reason) for x in r.rejected]
        return cls(True, r.valid, r.counts, r.actions, rejected, r.rejected_total, r.ignored_keys)


class ImportOut(Struct):
    dry_run: bool
    on_conflict: str
    source_model: str
    re_embedded: bool
    counts: dict[str, dict[str, int]]
    warnings: list[str]

    @classmethod
    def of(cls, r: ImportReport) -> ImportOut:
        return cls(r.dry_run, r.on_conflict, r.source_model, r.re_embedded, r.counts, r.warnings)


class MigrationController(Controller):
    path = "/migrations"
    tags = ["data transfer"]

    @post(
        "/browser-storage",
        summary="Migrate the platform's browser storage (dry_run=true: only report)",
        description="The body is the browser's localStorage: an object of keys to strings. "
        "See docs/browser-storage.md and docs/browser-storage.schema.json.",
        status_code=202,
        responses={
            200: ResponseSpec(data_container=DryRunOut, description="dry_run=true: the report"),
        },
    )
    async def migrate_browser_storage(
        self,
        data: JSONBody[dict[str, Any]],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
        dry_run: Annotated[bool, QueryParameter(description="validate and report only")] = False,
        skip_invalid: Annotated[
            bool, QueryParameter(description="migrate the valid items when some are rejected")
        ] = False,
    ) -> Response[MigrationOut | DryRunOut]:
        if dry_run:
            report = await migrations.dry_run(tenant_id, data)
            return Response(DryRunOut.of(report), status_code=200)
        job = await migrations.start(tenant_id, data, skip_invalid=skip_invalid)
        return Response(
            MigrationOut.of(job), status_code=202, headers={"Location": f"/v1/migrations/{job.id}"}
        )

    @get("/{migration_id:str}", summary="A migration job: status, counts and errors")
    async def get_migration(
        self,
        migration_id: FromPath[str],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> MigrationOut:
        return MigrationOut.of(await migrations.get(tenant_id, migration_id))

    @post(
        "/{migration_id:str}/rollback",
        status_code=200,
        summary="Undo a completed migration: delete what it created, restore what it overwrote",
    )
    async def rollback_migration(
        self,
        migration_id: FromPath[str],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> MigrationOut:
        return MigrationOut.of(await migrations.rollback(tenant_id, migration_id))


def _types(value: str | None) -> list[str]:
    if value is None:
        return ["environment", "task", "execution", "memory"]
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InvalidInput(
            "types names no export type; leave it out for all of them",
            errors=[FieldError("types", f"one or more of {', '.join(TYPE_NAMES)}")],
        )
    out: list[str] = []
    for name in names:
        kind = TYPE_NAMES.get(name, name)
        if kind not in EXPORT_ORDER:
            raise InvalidInput(
                f"unknown export type {name!r}; known: {', '.join(TYPE_NAMES)}",
                errors=[FieldError("types", f"unknown type {name!r}")],
            )
        out.append(kind)
    return out


def _check_admin(settings: Settings, token: str | None) -> None:
    expected = settings.admin_token
    if not expected or not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("secret values leave only with the admin token in X-Admin-Token")


class TransferController(Controller):
    tags = ["data transfer"]

    @get(
        "/export",
        summary="Stream this tenant as NDJSON (header, entities, end line)",
        media_type=NDJSON,
        opt=STANDBY_READS,
    )
    async def export_tenant(
        self,
        request: Request[Any, Any, Any],
        transfers: NamedDependency[TransferService],
        tenant_id: NamedDependency[uuid.UUID],
        types: Annotated[
            str | None, QueryParameter(
                description="comma list: memories,tasks,environments,executions,events"
            )
        ] = None,
        include_history: Annotated[
            bool, QueryParameter(description="each memory with its history")
        ] = False,
        include_secret_values: Annotated[
            bool, QueryParameter(description="secret values too (needs X-Admin-Token)")
        ] = False,
        events_since: Annotated[datetime | None, QueryParameter()] = None,
        events_until: Annotated[datetime | None, QueryParameter()] = None,
        admin_token: Annotated[str | None, HeaderParameter(name="X-Admin-Token")] = None,
    ) -> Stream:
        if include_secret_values:
            _check_admin(request.app.state.settings, admin_token)
        options = ExportOptions(
            types=_types(types), include_history=include_history,
            include_secret_values=include_secret_values,
            events_since=events_since, events_until=events_until,
        )
        return Stream(transfers.export(tenant_id, options), media_type=NDJSON)

    @post(
        "/import",
        status_code=200,
        summary="Import an NDJSON export into this tenant, all or nothing",
        request_max_body_size=None,
    )
    async def import_tenant(
        self,
        request: Request[Any, Any, Any],
        transfers: NamedDependency[TransferService],
        tenant_id: NamedDependency[uuid.UUID],
        dry_run: Annotated[bool, QueryParameter(description="report only; write nothing")] = False,
        on_conflict: Annotated[
            Literal["skip", "overwrite", "fail"],
            QueryParameter(description="what an id this tenant already holds gets"),
        ] = "skip",
    ) -> ImportOut:
        report = await transfers.import_stream(
            tenant_id, request.stream(), on_conflict=on_conflict, dry_run=dry_run
        )
        return ImportOut.of(report)
