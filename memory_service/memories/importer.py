"""Imports a stream of new memories, committed a batch at a time, with a per-line report.

The input is numbered lines, each already decoded into a ``NewMemory`` or the
reason it could not be (the HTTP layer decodes NDJSON). Lines are gathered into
batches of up to ``batch_size`` and each batch goes through
``MemoryService.add_many``: all or nothing, the same duplicate rules as a batch
add. A batch holding a bad line (undecodable, or refused by validation) is
rejected whole and the report names each bad line and why; the other batches
commit. An error that is not about a line (the database unreachable) stops the
import: batches committed before it stay committed, as the report up to then
would have said.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from memory_service.errors import InvalidInput, MemoryServiceError, PayloadTooLarge
from memory_service.memories.models import NewMemory
from memory_service.memories.service import MemoryService

# a line number and its memory, or the reason the line is not one
ParsedLine = tuple[int, NewMemory | str]
_ITEM_FIELD = re.compile(r"^items\[(\d+)\]\.?(.*)$")


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    created: int = 0
    duplicates: int = 0  # exact duplicates of a stored memory (or of an earlier line)
    rejected: int = 0  # lines in batches that were rejected whole
    batches_committed: int = 0
    batches_rejected: int = 0
    errors: list[LineError] = field(default_factory=list)


class MemoryImporter:
    def __init__(self, memories: MemoryService, *, batch_size: int) -> None:
        self.memories = memories
        self.batch_size = batch_size

    async def run(self, tenant_id: uuid.UUID, lines: AsyncIterator[ParsedLine]) -> ImportReport:
        report = ImportReport()
        batch: list[ParsedLine] = []
        async for parsed in lines:
            report.lines += 1
            batch.append(parsed)
            if len(batch) >= self.batch_size:
                await self._commit(tenant_id, batch, report)
                batch = []
        if batch:
            await self._commit(tenant_id, batch, report)
        return report

    async def _commit(self, tid: uuid.UUID, batch: list[ParsedLine], report: ImportReport) -> None:
        bad = [LineError(n, item) for n, item in batch if isinstance(item, str)]
        if not bad:
            items = [item for _, item in batch if isinstance(item, NewMemory)]
            try:
                _, created = await self.memories.add_many(tid, items)
            except (InvalidInput, PayloadTooLarge) as exc:
                bad = _line_errors(batch, exc)
            else:
                report.created += sum(created)
                report.duplicates += len(created) - sum(created)
                report.batches_committed += 1
                return
        report.errors.extend(bad)
        report.rejected += len(batch)
        report.batches_rejected += 1


def _line_errors(batch: list[ParsedLine], exc: MemoryServiceError) -> list[LineError]:
    """The batch's field errors (``items[i].field``) as errors of the lines they came from."""
    out = []
    for error in exc.errors:
        match = _ITEM_FIELD.match(error.field)
        if match and int(match[1]) < len(batch):
            out.append(LineError(batch[int(match[1])][0], f"{match[2] or 'item'}: {error.message}"))
    return out or [LineError(batch[0][0], exc.detail)]
