"""The migration wizard: upload a browser-storage export, read the dry run, run it, roll it back.

An uploaded file is parsed once and kept for an hour under a random id, in the
session's own uploads (``ConsoleSessionStore``, in PostgreSQL, so the next
request may land on any replica), so the dry-run report can offer "run this migration" without
sending the file's content (secret values included) back into the page. The
job page shows a progress bar per phase and refreshes itself while the job
runs; everything goes through ``MigrationService``, as the API does.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from api.console.rendering import is_htmx, page, see_other
from api.console.session import current_session, sessions
from memory_service.errors import FieldError, InvalidInput, MemoryServiceError, NotFound
from memory_service.records.console_sessions import ConsoleSession
from memory_service.transfer.migration import MigrationService

PHASES = ("environments", "tasks", "memories")


def _session(request: Request[Any, Any, Any]) -> ConsoleSession:
    session = current_session(request)
    assert session is not None  # the guard let the request in
    return session


async def _read_upload(request: Request[Any, Any, Any]) -> Any:
    form = await request.form()
    upload = form.get("file")
    raw = await upload.read() if isinstance(upload, UploadFile) else b""
    if not raw:
        pasted = form.get("pasted")
        raw = pasted.encode() if isinstance(pasted, str) else b""
    if not raw.strip():
        raise InvalidInput("choose an export file", errors=[FieldError("file", "required")])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            "the file is not JSON: export the browser's localStorage as a JSON object",
            errors=[FieldError("file", "not JSON")],
        ) from None


async def _stored_upload(request: Request[Any, Any, Any], upload_id: str) -> Any:
    payload = await sessions(request).upload(_session(request), upload_id)
    if payload is None:
        raise NotFound("that upload has expired; upload the file again")
    return payload


def job_context(job: Any) -> dict[str, Any]:
    bars = [
        {"phase": p, "done": job.done.get(p, 0), "total": job.total.get(p, 0)}
        for p in PHASES
        if job.total.get(p, 0)
    ]
    return {"job": job, "bars": bars, "running": job.status in ("pending", "running")}


class MigrationPagesController(Controller):
    path = "/migration"
    include_in_schema = False

    @get("/")
    async def upload_page(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "migration/upload.html", active="migration", error=None)

    @post("/dry-run")
    async def dry_run(
        self,
        request: Request[Any, Any, Any],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Template:
        try:
            payload = await _read_upload(request)
            report = await migrations.dry_run(tenant_id, payload)
        except MemoryServiceError as exc:
            return page(
                request, "migration/upload.html", status_code=422, active="migration",
                error=exc.detail,
            )
        upload_id = await sessions(request).save_upload(_session(request), payload)
        return page(
            request, "migration/report.html", active="migration", report=report,
            upload_id=upload_id,
        )

    @post("/run")
    async def run(
        self,
        request: Request[Any, Any, Any],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await request.form()
        upload_id = str(form.get("upload_id") or "")
        payload = await _stored_upload(request, upload_id)
        job = await migrations.start(tenant_id, payload, skip_invalid=form.get("skip_invalid") == "on")
        await sessions(request).drop_upload(_session(request), upload_id)
        return see_other(f"/console/migration/{job.id}")

    @get("/{job_id:str}")
    async def job_page(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Template:
        job = await migrations.get(tenant_id, job_id)
        if is_htmx(request):
            return page(request, "migration/_job.html", **job_context(job))
        return page(request, "migration/job.html", active="migration", **job_context(job))

    @post("/{job_id:str}/rollback")
    async def rollback(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        migrations: NamedDependency[MigrationService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        await migrations.rollback(tenant_id, job_id)
        return see_other(f"/console/migration/{job_id}")
