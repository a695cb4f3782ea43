"""Opaque, signed keyset cursors.

A cursor carries the last internal sequence number a page returned, bound to the
tenant and the listing it came from, and signed with a key stored in the
database (so every process on the same database accepts it). Keyset paging on an
immutable, increasing key returns every row exactly once, also while rows are
inserted. A cursor that is malformed, tampered with, or from another listing is
an ``InvalidInput``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from memory_service.errors import FieldError, InvalidInput

MAX_CURSOR_LENGTH = 512
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, kind: str, tenant_id: uuid.UUID, position: int | str) -> str:
        body = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
        payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        return f"{payload}.{self._sign(kind, tenant_id, payload)}"

    def decode(self, cursor: str, kind: str, tenant_id: uuid.UUID) -> int | str:
        bad = InvalidInput(
            "cursor is not valid for this listing",
            errors=[FieldError("cursor", "malformed, tampered with, or from another listing")],
        )
        if (
            not cursor
            or len(cursor) > MAX_CURSOR_LENGTH
            or not cursor.isascii()
            or cursor.count(".") != 1
        ):
            raise bad
        payload, signature = cursor.split(".")
        if not hmac.compare_digest(signature, self._sign(kind, tenant_id, payload)):
            raise bad
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, UnicodeDecodeError):
            raise bad from None
        if not isinstance(body, dict) or body.get("k") != kind:
            raise bad
        position = body.get("p")
        if isinstance(position, bool) or not isinstance(position, int | str):
            raise bad
        return position

    def _sign(self, kind: str, tenant_id: uuid.UUID, payload: str) -> str:
        message = f"{kind}|{tenant_id}|{payload}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
