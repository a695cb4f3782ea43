"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from api.schemas import Health


@get("/health", tags=["health"], summary="200 while the process is up")
async def health() -> Health:
    return Health(status="ok")


@get("/ready", tags=["health"], summary="200 when the database is reachable and migrated")
async def ready(request: Request[Any, Any, Any]) -> Response[Health]:
    checks = await request.app.state.runtime.ready()
    ok = all(v == "ok" for v in checks.values())
    return Response(Health("ready" if ok else "not ready", checks), status_code=200 if ok else 503)
