"""Environments: list, create, edit and delete; secrets are write-only.

The service never returns a secret's value, so these pages cannot show one:
they list secret names, take new values in password fields that are never
filled back in, and remove secrets by name.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from api.console.forms import form_fields, json_object, one, optional, version
from api.console.rendering import page, see_other, status_of
from memory_service.errors import MemoryServiceError
from memory_service.records.environments import EnvironmentService


def _secrets(form: dict[str, list[str]]) -> dict[str, str]:
    names, values = form.get("secret_name", []), form.get("secret_value", [])
    return {name: value for name, value in zip(names, values, strict=False) if name}


class EnvironmentPagesController(Controller):
    path = "/environments"
    include_in_schema = False

    @get("/")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        result = await environments.list(tenant_id, limit=50, cursor=cursor)
        return page(
            request,
            "environments/list.html",
            active="environments",
            environments=result.items,
            next_cursor=result.next_cursor,
            error=None,
            entered={},
        )

    @post("/")
    async def create(
        self,
        request: Request[Any, Any, Any],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        try:
            await environments.create(
                tenant_id,
                {
                    "name": one(form, "name"),
                    "description": optional(form, "description"),
                    "config": json_object(one(form, "config"), "config"),
                    "secrets": _secrets(form),
                    "is_active": one(form, "is_active") == "on",
                },
            )
        except MemoryServiceError as exc:
            result = await environments.list(tenant_id, limit=50)
            return page(
                request,
                "environments/list.html",
                status_code=status_of(exc),
                active="environments",
                environments=result.items,
                next_cursor=result.next_cursor,
                error=exc.detail,
                # what was typed comes back, except secret values
                entered={k: one(form, k) for k in ("name", "description", "config")},
            )
        return see_other("/console/environments")

    @get("/{environment_id:str}")
    async def edit_page(
        self,
        request: Request[Any, Any, Any],
        environment_id: FromPath[str],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Template:
        env = await environments.get(tenant_id, environment_id)
        return page(
            request, "environments/edit.html", active="environments", env=env, error=None
        )

    @post("/{environment_id:str}")
    async def update(
        self,
        request: Request[Any, Any, Any],
        environment_id: FromPath[str],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        secrets: dict[str, str | None] = {**_secrets(form)}
        for name in form.get("remove_secret", []):
            secrets[name] = None
        changes: dict[str, Any] = {
            "description": optional(form, "description"),
            "is_active": one(form, "is_active") == "on",
        }
        try:
            changes["config"] = json_object(one(form, "config"), "config")
            if secrets:
                changes["secrets"] = secrets
            await environments.update(tenant_id, environment_id, changes, version(form))
        except MemoryServiceError as exc:
            env = await environments.get(tenant_id, environment_id)
            return page(
                request,
                "environments/edit.html",
                status_code=status_of(exc),
                active="environments",
                env=env,
                error=exc.detail,
            )
        return see_other(f"/console/environments/{environment_id}")

    @post("/{environment_id:str}/delete")
    async def delete(
        self,
        request: Request[Any, Any, Any],
        environment_id: FromPath[str],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[Any]:
        form = await form_fields(request)
        await environments.delete(tenant_id, environment_id, force=one(form, "force") == "on")
        return see_other("/console/environments")
