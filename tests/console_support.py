"""Signing in to the console from tests: the sign-in form, its nonce, the page's CSRF token."""

from __future__ import annotations

import re
from typing import Any

NONCE = re.compile(r'name="_csrf" value="([^"]+)"')
META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_of(html: str) -> str:
    match = META.search(html)
    assert match, "the page carries no CSRF token"
    return match[1]


async def sign_in(client: Any, api_key: str) -> str:
    """Signs ``client`` in (cookies kept by the client); returns the session's CSRF token."""
    client.cookies.clear()
    form = await client.get("/console/login")
    assert form.status_code == 200, form.text
    nonce = NONCE.search(form.text)
    assert nonce
    response = await client.post(
        "/console/login",
        data={"_csrf": nonce[1], "api_key": api_key, "next": "/console/tasks"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    board = await client.get("/console/tasks")
    assert board.status_code == 200, board.text
    return csrf_of(board.text)
