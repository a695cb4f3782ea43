"""The domain exception tree: what the core raises, and nothing else.

Driver and library errors are translated into these at the storage edge
(``memory_service.infra.db.wrap_db_errors``); the HTTP layer maps each class to one
status code in ``api.errors``. Nothing above the storage layer sees psycopg.

    MemoryServiceError
    ├── InvalidInput            400/422: the request cannot be served as written
    │   └── InvalidFilter       422: the filter language rejects part of a filter
    ├── Unauthenticated         401: missing or unknown credentials
    ├── Forbidden               403: the caller may not use this endpoint at all
    ├── NotFound                404: no such row for this tenant
    ├── Conflict                409: the change contradicts current state
    ├── Gone                    410: a change-feed cursor older than the log's retention
    ├── PreconditionFailed      412: If-Match names a stale version (carries the current row)
    ├── PayloadTooLarge         413: a body or field over its configured limit
    ├── RateLimited             429: the tenant is over its fair share; retry later
    └── Unavailable             503: a dependency is down; retry later
        └── CircuitOpen         503: failing fast while a dependency recovers

Where they come from. ``InvalidInput`` and ``PayloadTooLarge`` are raised by the
services' checks before any write, so a rejected request changes nothing.
``NotFound`` also covers another tenant's row: the service never says it exists.
``Conflict`` is a state rule (a duplicate name, a forbidden task status change,
deleting an environment that tasks use); ``PreconditionFailed`` a stale
``If-Match``, and carries the entity as it is now so a client can merge without
another read. ``Gone`` answers a change-feed cursor whose changes retention has
removed: the client takes a snapshot and follows on from its cursor.
``RateLimited`` comes from ``memory_service.infra.fairness`` before a request does any
work, with ``retry_after`` seconds. ``Unavailable`` comes from the storage edge (a lost connection, a
pool timeout, a cancelled query) and from the embedder; it carries
``retry_after`` seconds, sent as the ``Retry-After`` header. ``CircuitOpen`` is
raised by ``memory_service.infra.resilience.CircuitBreaker`` without touching the
dependency at all, once it has failed repeatedly; a write that gets any 503 was
not acknowledged, and idempotent reads are retried by the HTTP layer while the
circuit is closed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class MemoryServiceError(Exception):
    """Base of every error the service raises on purpose."""

    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(MemoryServiceError):
    title = "Invalid input"


class InvalidFilter(InvalidInput):
    title = "Invalid filter"


class Unauthenticated(MemoryServiceError):
    title = "Unauthenticated"


class Forbidden(MemoryServiceError):
    title = "Forbidden"


class NotFound(MemoryServiceError):
    title = "Not found"


class Conflict(MemoryServiceError):
    title = "Conflict"


class Gone(MemoryServiceError):
    title = "Gone"


class PreconditionFailed(MemoryServiceError):
    title = "Precondition failed"

    def __init__(self, detail: str, *, current: object | None = None) -> None:
        super().__init__(detail)
        self.current = current  # the entity as it is now (a Memory, Task, Environment)


class PayloadTooLarge(MemoryServiceError):
    title = "Payload too large"


class RateLimited(MemoryServiceError):
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(MemoryServiceError):
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class CircuitOpen(Unavailable):
    title = "Circuit open"
