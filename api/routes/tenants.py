"""Admin: tenants and their API keys."""

from __future__ import annotations

from litestar import Controller, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.schemas import KeyCreated, TenantCreate, TenantCreated
from memory_service.records.tenants import TenantService


class TenantController(Controller):
    path = "/tenants"
    tags = ["admin"]

    @post("/", status_code=201, summary="Create a tenant and its first API key")
    async def create_tenant(
        self, data: JSONBody[TenantCreate], tenants: NamedDependency[TenantService]
    ) -> TenantCreated:
        tenant, key = await tenants.create_tenant(data.name)
        return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)

    @post("/{tenant_id:str}/keys", status_code=201, summary="Issue another API key")
    async def create_key(
        self, tenant_id: FromPath[str], tenants: NamedDependency[TenantService]
    ) -> KeyCreated:
        return KeyCreated(api_key=await tenants.create_key(tenant_id))

    @delete("/{tenant_id:str}/keys/{key_prefix:str}", status_code=204, summary="Revoke a key")
    async def revoke_key(
        self,
        tenant_id: FromPath[str],
        key_prefix: FromPath[str],
        tenants: NamedDependency[TenantService],
    ) -> None:
        await tenants.revoke_key(tenant_id, key_prefix)
