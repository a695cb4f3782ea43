"""Export and import of a tenant: what the HTTP layer and the CLI call.

``TransferService.export`` streams a tenant as NDJSON from one database
snapshot; ``import_stream`` reads such a stream from an async iterator of byte
chunks, line by line, into the caller's tenant inside one transaction that
commits only after a complete stream (``dry_run`` always rolls it back, so it
reports exactly what an import would do and writes nothing). Progress of an
import goes to the event log as ``import.progress``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge
from memory_service.events.writer import EventWriter
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.secret_box import SecretBox
from memory_service.memories.validation import MemoryValidator
from memory_service.transfer.exporter import ExportOptions, export_lines
from memory_service.transfer.importer import (
    CONFLICT_POLICIES,
    Importer,
    ImportReport,
)
from memory_service.transfer.line_checks import line_error
from memory_service.transfer.lines import (
    FORMAT,
    FORMAT_VERSION,
    End,
    Header,
    LineError,
    Model,
    decode_line,
)

MAX_LINE_BYTES = 16 * 1024 * 1024


def service_version() -> str:
    try:
        return metadata.version("memory-service")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """Numbered non-empty lines; a last line without its newline is still a line."""
    buffer = bytearray()
    lineno = 0
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            lineno += 1
            line = bytes(buffer[start:end]).strip()
            start = end + 1
            if line:
                yield lineno, line
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            raise PayloadTooLarge(
                f"line {lineno + 1} is longer than {MAX_LINE_BYTES} bytes",
                errors=[FieldError(f"line {lineno + 1}", "too long")],
            )
    if buffer.strip():
        yield lineno + 1, bytes(buffer).strip()


class TransferService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        embedder: CachedEmbedder,
        validator: MemoryValidator,
        events: EventWriter,
        settings: Settings,
        box: SecretBox | None = None,
    ) -> None:
        self.box = box
        self.pool = pool
        self.embedder = embedder
        self.validator = validator
        self.events = events
        self.settings = settings

    def model(self) -> Model:
        return Model(self.embedder.model_name, self.embedder.dimension)

    async def export(self, tenant_id: uuid.UUID, options: ExportOptions) -> AsyncIterator[bytes]:
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            async for chunk in export_lines(
                conn, tenant_id, options, self.model(), service_version(), self.box
            ):
                yield chunk

    async def import_stream(
        self,
        tenant_id: uuid.UUID,
        chunks: AsyncIterator[bytes],
        *,
        on_conflict: str = "skip",
        dry_run: bool = False,
    ) -> ImportReport:
        if on_conflict not in CONFLICT_POLICIES:
            raise InvalidInput(
                f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}",
                errors=[FieldError("on_conflict", "skip, overwrite or fail")],
            )
        async with (
            wrap_db_errors(),
            self.pool.connection() as conn,
            conn.transaction(force_rollback=dry_run),
        ):
            report = await self._read(tenant_id, chunks, on_conflict, dry_run, conn)
        if not dry_run:
            await self.events.emit(
                tenant_id, "import.completed", attributes={"counts": report.counts}
            )
        return report

    async def _read(
        self,
        tenant_id: uuid.UUID,
        chunks: AsyncIterator[bytes],
        on_conflict: str,
        dry_run: bool,
        conn: Any,
    ) -> ImportReport:
        importer: Importer | None = None
        report: ImportReport | None = None

        async def progress(attributes: dict[str, Any]) -> None:
            if not dry_run:
                await self.events.emit(tenant_id, "import.progress", attributes=attributes)

        async for lineno, raw in split_lines(chunks):
            try:
                line = decode_line(raw)
            except LineError as exc:
                raise line_error(lineno, str(exc)) from None
            if report is not None:
                raise line_error(lineno, "data after the end line")
            if importer is None:
                self._check_header(lineno, line)
                assert isinstance(line, Header)
                importer = Importer(
                    conn, tenant_id, line, embedder=self.embedder, validator=self.validator,
                    on_conflict=on_conflict, dry_run=dry_run, progress=progress, box=self.box,
                )
            elif isinstance(line, Header):
                raise line_error(lineno, "a second header line")
            elif isinstance(line, End):
                report = await importer.finish(lineno, line.counts)
            else:
                await importer.add(lineno, line)
        if report is not None:
            return report
        raise InvalidInput(
            "the stream ended before its end line (truncated?); nothing was imported",
            errors=[FieldError("body", "no end line")],
        )

    def _check_header(self, lineno: int, line: Any) -> None:
        if not isinstance(line, Header):
            raise line_error(lineno, "the first line must be the header")
        if line.format != FORMAT or line.format_version != FORMAT_VERSION:
            raise line_error(
                lineno,
                f"unknown format {line.format!r} version {line.format_version}; "
                f"this service reads {FORMAT!r} version {FORMAT_VERSION}",
            )


__all__ = ["End", "ExportOptions", "ImportReport", "TransferService"]
