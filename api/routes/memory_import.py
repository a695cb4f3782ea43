"""``POST /v1/memories/import``: new memories streamed as NDJSON, committed in batches.

Each line is one memory with the fields of a batch item, decoded and checked
exactly as a JSON body is (``api.input_guard``); ``MemoryImporter`` commits the
lines in batches of up to ``max_batch_items`` and reports counts and every bad
line. The body is read as it arrives, a batch at a time, so an import is not
bound by the request-size limit of other routes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from msgspec import Struct

from api.input_guard import decode_checked
from api.limits import STREAMED_BODY_OPTION
from api.schemas import MemoryCreate
from memory_service.errors import InvalidInput
from memory_service.memories.importer import ImportReport, MemoryImporter, ParsedLine
from memory_service.transfer.service import split_lines

IMPORT_DESCRIPTION = (
    "The body is NDJSON (`application/x-ndjson`): one memory per line with the fields of a "
    "`POST /v1/memories/batch` item. Lines are committed in batches of up to 1,000, each all "
    "or nothing with the batch's duplicate rules; a batch holding a bad line is rejected whole "
    "and `errors` names every bad line (1-based) and why; the other batches commit."
)


class LineErrorOut(Struct):
    line: int
    reason: str


class MemoryImportOut(Struct):
    lines: int
    created: int
    duplicates: int
    rejected: int
    batches_committed: int
    batches_rejected: int
    errors: list[LineErrorOut]

    @classmethod
    def of(cls, r: ImportReport) -> MemoryImportOut:
        errors = [LineErrorOut(e.line, e.reason) for e in r.errors]
        return cls(
            r.lines, r.created, r.duplicates, r.rejected,
            r.batches_committed, r.batches_rejected, errors,
        )


async def parse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedLine]:
    async for number, raw in split_lines(chunks):
        try:
            item: MemoryCreate = decode_checked(raw, MemoryCreate)
        except ValidationException as exc:
            yield number, str(exc.detail)
        except InvalidInput as exc:
            yield number, exc.detail
        else:
            yield number, item.to_domain()


NDJSON_MEDIA_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class MemoryImportController(Controller):
    path = "/memories"
    tags = ["memories"]

    @post(
        "/import",
        status_code=200,
        summary="Import memories streamed as NDJSON, committed in batches of up to 1,000",
        description=IMPORT_DESCRIPTION,
        request_max_body_size=None,
        opt={STREAMED_BODY_OPTION: NDJSON_MEDIA_TYPES},
    )
    async def import_memories(
        self,
        request: Request[Any, Any, Any],
        memory_importer: NamedDependency[MemoryImporter],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> MemoryImportOut:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in NDJSON_MEDIA_TYPES:  # declared in the OpenAPI document from the opt
            raise HTTPException(
                status_code=415,
                detail=f"send the body as application/x-ndjson, not {media or 'without a Content-Type'}",
            )
        report = await memory_importer.run(tenant_id, parse_lines(request.stream()))
        return MemoryImportOut.of(report)
