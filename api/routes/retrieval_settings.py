"""Tenant retrieval settings: ``GET``/``PUT /v1/settings`` (the semantic dedupe default)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta, Struct

from api.schemas import Strict
from memory_service.retrieval.settings import RetrievalSettingsService, TenantRetrievalSettings
from memory_service.runtime import Runtime


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


def _service(runtime: Runtime) -> RetrievalSettingsService:
    service = runtime.extras["retrieval_settings"]
    assert isinstance(service, RetrievalSettingsService)
    return service


class RetrievalSettingsController(Controller):
    path = "/settings"
    tags = ["settings"]

    @get("/", summary="The tenant's retrieval settings")
    async def get_settings(
        self, runtime: NamedDependency[Runtime], tenant_id: NamedDependency[str]
    ) -> RetrievalSettingsOut:
        return RetrievalSettingsOut.of(await _service(runtime).get(tenant_id))

    @put("/", summary="Set the tenant's retrieval settings (semantic dedupe default)")
    async def put_settings(
        self,
        data: JSONBody[RetrievalSettingsIn],
        runtime: NamedDependency[Runtime],
        tenant_id: NamedDependency[str],
    ) -> RetrievalSettingsOut:
        saved = await _service(runtime).put(tenant_id, data.dedupe, data.dedupe_threshold)
        return RetrievalSettingsOut.of(saved)
