"""Sign-in and sign-out pages: a tenant API key in, a session cookie out."""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from api.console.forms import form_fields, one
from api.console.rendering import page, see_other
from api.console.session import (
    current_session,
    end_session,
    login_nonce_cookie,
    safe_next,
    start_session,
)
from memory_service.errors import Unauthenticated
from memory_service.records.tenants import TenantService


@get("/", include_in_schema=False)
async def console_home() -> Redirect:
    return see_other("/console/tasks")


@get("/login", include_in_schema=False)
async def sign_in_form(request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Template:
    nonce, cookie = login_nonce_cookie(request)
    response = page(request, "login.html", login_nonce=nonce, next=safe_next(next), error=None)
    response.cookies.append(cookie)
    return response


@post("/login", include_in_schema=False)
async def sign_in(request: Request[Any, Any, Any], tenants: NamedDependency[TenantService]) -> Response[Any]:
    fields = await form_fields(request)
    api_key = one(fields, "api_key")
    target = safe_next(one(fields, "next"))
    session_cookie = None
    with contextlib.suppress(Unauthenticated):  # answered below as a key that is not valid
        await tenants.authenticate(api_key)
        session_cookie = await start_session(request, api_key)
    if session_cookie is None:
        nonce, cookie = login_nonce_cookie(request)
        response = page(
            request,
            "login.html",
            status_code=401,
            login_nonce=nonce,
            next=target,
            error="That key is not valid. Check it and try again.",
        )
        response.cookies.append(cookie)
        return response
    redirect = see_other(target)
    redirect.cookies.append(session_cookie)
    return redirect


@post("/logout", include_in_schema=False)
async def sign_out(request: Request[Any, Any, Any]) -> Redirect:
    redirect = see_other("/console/login")
    if current_session(request) is not None:
        redirect.cookies.append(await end_session(request))
    return redirect
