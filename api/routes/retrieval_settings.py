"""Tenant retrieval settings: ``GET``/``PUT /v1/settings`` (the semantic dedupe default)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta, Struct

from api.schemas import Strict
from memory_service.retrieval.settings import RetrievalSettingsService, TenantRetrievalSettings


class RetrievalSettingsIn(Strict):
    dedupe: Annotated[bool, Meta(description="Dedupe adds that do not say otherwise")]
    dedupe_threshold: (
        Annotated[
            float, Meta(gt=0.0, le=1.0, description="Cosine similarity that counts as a copy")
        ]
        | None
    ) = None


class RetrievalSettingsOut(Struct):
    dedupe: bool
    dedupe_threshold: float

    @classmethod
    def of(cls, s: TenantRetrievalSettings) -> RetrievalSettingsOut:
        return cls(s.dedupe, round(s.dedupe_threshold, 6))


class RetrievalSettingsController(Controller):
    path = "/settings"
    tags = ["settings"]

    @get("/", summary="The tenant's retrieval settings")
    async def get_settings(
        self,
        retrieval_settings: NamedDependency[RetrievalSettingsService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RetrievalSettingsOut:
        return RetrievalSettingsOut.of(await retrieval_settings.get(tenant_id))

    @put("/", summary="Set the tenant's retrieval settings (semantic dedupe default)")
    async def put_settings(
        self,
        data: JSONBody[RetrievalSettingsIn],
        retrieval_settings: NamedDependency[RetrievalSettingsService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> RetrievalSettingsOut:
        saved = await retrieval_settings.put(tenant_id, data.dedupe, data.dedupe_threshold)
        return RetrievalSettingsOut.of(saved)
