"""Environments: create, get, patch, delete (409 while tasks use it unless forced), list.

Secrets are write-only: responses carry ``secret_names`` and never a value.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from msgspec import UNSET, Struct, UnsetType

from api.routes.memories import parse_if_match
from api.schemas import Strict
from memory_service.records.environments import Environment, EnvironmentService


class EnvironmentCreate(Strict):
    name: str
    description: str | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    secrets: dict[str, str] = msgspec.field(default_factory=dict)
    is_active: bool = True

    def fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__}


class EnvironmentUpdate(Strict):
    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    config: dict[str, Any] | UnsetType = UNSET
    # merged by name; a null value removes that secret
    secrets: dict[str, str | None] | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET

    def fields(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


class EnvironmentOut(Struct):
    id: str
    name: str
    description: str | None
    config: dict[str, Any]
    secrets: list[str]  # names only
    is_active: bool
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, e: Environment) -> EnvironmentOut:
        return cls(
            e.id,
            e.name,
            e.description,
            e.config,
            e.secret_names,
            e.is_active,
            e.created_at,
            e.updated_at,
            e.version,
        )


class EnvironmentPage(Struct):
    items: list[EnvironmentOut]
    next_cursor: str | None


def _with_etag(env: Environment, status_code: int = 200) -> Response[EnvironmentOut]:
    return Response(
        EnvironmentOut.of(env), status_code=status_code, headers={"ETag": f'"{env.version}"'}
    )


class EnvironmentController(Controller):
    path = "/environments"
    tags = ["environments"]

    @post("/", summary="Create an environment (names are unique per tenant)")
    async def create_environment(
        self,
        data: JSONBody[EnvironmentCreate],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[EnvironmentOut]:
        return _with_etag(await environments.create(tenant_id, data.fields()), 201)

    @get("/", summary="List environments, oldest first")
    async def list_environments(
        self,
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
        is_active: Annotated[bool | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> EnvironmentPage:
        page = await environments.list(tenant_id, is_active=is_active, limit=limit, cursor=cursor)
        return EnvironmentPage([EnvironmentOut.of(e) for e in page.items], page.next_cursor)

    @get("/{environment_id:str}", summary="Get an environment (secret names only)")
    async def get_environment(
        self,
        environment_id: FromPath[str],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
    ) -> Response[EnvironmentOut]:
        return _with_etag(await environments.get(tenant_id, environment_id))

    @patch("/{environment_id:str}", summary="Update an environment; secrets merge by name")
    async def update_environment(
        self,
        environment_id: FromPath[str],
        data: JSONBody[EnvironmentUpdate],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)] = None,
    ) -> Response[EnvironmentOut]:
        env = await environments.update(
            tenant_id, environment_id, data.fields(), parse_if_match(if_match)
        )
        return _with_etag(env)

    @delete(
        "/{environment_id:str}",
        status_code=204,
        summary="Delete an environment; 409 while tasks use it unless ?force=true",
    )
    async def delete_environment(
        self,
        environment_id: FromPath[str],
        environments: NamedDependency[EnvironmentService],
        tenant_id: NamedDependency[uuid.UUID],
        force: Annotated[bool, QueryParameter()] = False,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=64)] = None,
    ) -> None:
        await environments.delete(
            tenant_id, environment_id, force=force, if_match=parse_if_match(if_match)
        )
