"""Validation of memory input against the configured limits.

``MemoryValidator`` checks every field a client can send (content, embedding,
importance, metadata, scope, expiry, search requests) and raises
``InvalidInput`` or ``PayloadTooLarge`` naming the field, so bad input is a 4xx
problem document before anything is embedded or written. ``prepare`` turns a
``NewMemory`` into the row values the repository inserts.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

import numpy as np

from memory_service.config import Settings
from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge
from memory_service.memories.models import NewMemory, Scope, SearchRequest
from memory_service.validation import check_json_object

MAX_SCOPE_LENGTH = 256
# the smallest magnitude float32 rounds to infinity
FLOAT32_LIMIT = 3.4028235677973366e38

_WS = re.compile(r"\s+")


def content_hash(content: str) -> bytes:
    """Hash of the normalised text: Unicode NFKC, collapsed whitespace, case-folded."""
    normal = _WS.sub(" ", unicodedata.normalize("NFKC", content)).strip().casefold()
    return hashlib.sha256(normal.encode()).digest()


class MemoryValidator:
    def __init__(self, settings: Settings, dimension: int) -> None:
        self.settings = settings
        self.dimension = dimension

    def check_content(self, content: Any, where: str = "content") -> str:
        if not isinstance(content, str) or not content.strip():
            raise InvalidInput(
                f"{where} must be a non-empty string",
                errors=[FieldError(where, "must not be empty")],
            )
        if "\x00" in content:
            raise InvalidInput(
                f"{where} contains a NUL character", errors=[FieldError(where, "NUL character")]
            )
        size = len(content.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_content_bytes:
            raise PayloadTooLarge(
                f"{where} is {size} bytes; the limit is {self.settings.max_content_bytes}",
                errors=[FieldError(where, f"at most {self.settings.max_content_bytes} bytes")],
            )
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{where} is not valid UTF-8", errors=[FieldError(where, "lone surrogate")]
            ) from None
        return content

    def check_embedding(self, embedding: Any, where: str = "embedding") -> np.ndarray:
        if not isinstance(embedding, list | tuple) or len(embedding) != self.dimension:
            got = (
                len(embedding) if isinstance(embedding, list | tuple) else type(embedding).__name__
            )
            raise InvalidInput(
                f"{where} must be a list of {self.dimension} numbers (got {got})",
                errors=[FieldError(where, f"expected {self.dimension} numbers")],
            )
        try:
            wide = np.asarray(embedding, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(
                f"{where} must contain only numbers", errors=[FieldError(where, "not a number")]
            ) from None
        if wide.ndim != 1 or not np.isfinite(wide).all():
            raise InvalidInput(
                f"{where} contains NaN or infinite values",
                errors=[FieldError(where, "NaN or Inf")],
            )
        if float(np.abs(wide).max(initial=0.0)) >= FLOAT32_LIMIT:
            raise InvalidInput(
                f"{where} holds values too large for float32 (below {FLOAT32_LIMIT:.8g})",
                errors=[FieldError(where, "too large for float32")],
            )
        # stored as float32; its length is taken and divided in float64, whose squares
        # cannot overflow: a vector longer than the largest float32 still has a direction
        wide = wide.astype(np.float32).astype(np.float64)
        norm = math.sqrt(float(np.dot(wide, wide)))
        if norm == 0.0:
            raise InvalidInput(
                f"{where} is the zero vector, which has no direction",
                errors=[FieldError(where, "zero vector")],
            )
        return (wide / norm).astype(np.float32)

    def check_importance(self, value: Any, where: str = "importance") -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidInput(f"{where} must be a number", errors=[FieldError(where, "number")])
        if not 0.0 <= float(value) <= 1.0:
            raise InvalidInput(
                f"{where} must be between 0 and 1", errors=[FieldError(where, "in [0, 1]")]
            )
        return float(value)

    def check_metadata(self, value: Any, where: str = "metadata") -> dict[str, Any]:
        """An object that ``jsonb`` stores and the search indexes hold and compare (the one
        rule of ``memory_service.validation.json_problem``), within the configured size."""
        return check_json_object(value, where, self.settings.max_metadata_bytes)

    def check_scope(self, scope: Scope, where: str = "") -> Scope:
        for name, value in scope.given().items():
            if not value or len(value) > MAX_SCOPE_LENGTH or "\x00" in value:
                field = f"{where}{name}"
                raise InvalidInput(
                    f"{field} must be 1 to {MAX_SCOPE_LENGTH} characters",
                    errors=[FieldError(field, "invalid scope value")],
                )
        return scope

    def check_expiry(self, value: datetime | None, where: str = "expires_at") -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidInput(
                f"{where} needs a time zone", errors=[FieldError(where, "RFC 3339 with zone")]
            )
        if value <= datetime.now(UTC):
            raise InvalidInput(
                f"{where} must be in the future", errors=[FieldError(where, "in the past")]
            )
        return value

    def prepare(self, item: NewMemory, where: str) -> dict[str, Any]:
        content = self.check_content(item.content, f"{where}content")
        return {
            "content": content,
            "content_hash": content_hash(content),
            "scope": self.check_scope(item.scope, where),
            "metadata": self.check_metadata(item.metadata, f"{where}metadata"),
            "importance": self.check_importance(item.importance, f"{where}importance"),
            "expires_at": self.check_expiry(item.expires_at, f"{where}expires_at"),
            "embedding": (
                None
                if item.embedding is None
                else self.check_embedding(item.embedding, f"{where}embedding")
            ),
            "context": (
                None
                if item.context is None
                else self.check_content(item.context, f"{where}context")
            ),
            "dedupe": item.dedupe,
            "dedupe_threshold": self.check_threshold(item.dedupe_threshold, f"{where}"),
        }

    def check_threshold(self, value: float | None, where: str) -> float | None:
        if value is not None and not (math.isfinite(value) and 0.0 < value <= 1.0):
            field = f"{where}dedupe_threshold"
            raise InvalidInput(f"{field} must be in (0, 1]", errors=[FieldError(field, "(0, 1]")])
        return value

    def check_search(self, request: SearchRequest) -> None:
        if (request.query is None) == (request.embedding is None):
            raise InvalidInput(
                "give exactly one of query and embedding",
                errors=[FieldError("query", "exactly one of query and embedding")],
            )
        if request.query is not None:
            self.check_content(request.query, "query")
        if not 1 <= request.k <= 1000:
            raise InvalidInput("k must be between 1 and 1000", errors=[FieldError("k", "1..1000")])
        if request.min_score is not None and not math.isfinite(request.min_score):
            raise InvalidInput(
                "min_score must be finite", errors=[FieldError("min_score", "finite")]
            )
        if request.consistency not in ("eventual", "strong"):
            raise InvalidInput(
                "consistency must be eventual or strong",
                errors=[FieldError("consistency", "eventual or strong")],
            )
        self.check_scope(request.scope)

