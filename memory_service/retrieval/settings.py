"""Per-tenant retrieval settings: whether adds dedupe semantically, and at what threshold."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.errors import FieldError, InvalidInput
from memory_service.infra.db import wrap_db_errors
from memory_service.retrieval import storage


@dataclass(frozen=True, slots=True)
class TenantRetrievalSettings:
    dedupe: bool
    dedupe_threshold: float


class RetrievalSettingsService:
    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def get(self, tenant_id: uuid.UUID) -> TenantRetrievalSettings:
        async with wrap_db_errors(), self.pool.connection() as conn:
            stored = await storage.get_tenant_settings(conn, tenant_id)
        if stored is None:
            return TenantRetrievalSettings(False, self.settings.dedupe_threshold)
        return TenantRetrievalSettings(*stored)

    async def put(
        self, tenant_id: uuid.UUID, dedupe: bool, dedupe_threshold: float | None
    ) -> TenantRetrievalSettings:
        threshold = self.settings.dedupe_threshold if dedupe_threshold is None else dedupe_threshold
        if not math.isfinite(threshold) or not 0.0 < threshold <= 1.0:
            raise InvalidInput(
                "dedupe_threshold must be in (0, 1]",
                errors=[FieldError("dedupe_threshold", "in (0, 1]")],
            )
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            await storage.put_tenant_settings(conn, tenant_id, dedupe, threshold)
        return TenantRetrievalSettings(dedupe, threshold)
