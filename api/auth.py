"""Bearer authentication: tenant API keys for ``/v1``, the admin token for ``/v1/admin``.

Both are guards, so no handler under a guarded router can forget them. The tenant
guard leaves the tenant id in ``request.state.tenant_id`` for the ``tenant_id``
dependency, as a ``uuid.UUID``: the core never parses it again.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from memory_service.errors import Forbidden, Unauthenticated
from memory_service.records.tenants import TenantService


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <api key>")
    return token.strip()


async def require_tenant(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    tenants: TenantService = connection.app.state.tenants
    connection.state.tenant_id = await tenants.authenticate(bearer_token(connection))


async def require_admin(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    expected: str | None = connection.app.state.settings.admin_token
    if not expected:
        raise Forbidden("admin endpoints are disabled: set MEMORY_ADMIN_TOKEN to enable them")
    if not hmac.compare_digest(bearer_token(connection).encode(), expected.encode()):
        raise Unauthenticated("wrong admin token")


def provide_tenant_id(request: Request[Any, Any, Any]) -> uuid.UUID:
    tenant_id: uuid.UUID = request.state.tenant_id
    return tenant_id
