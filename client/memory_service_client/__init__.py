"""memory-service-client: a typed Python client for memory-service.

``MemoryClient`` (blocking) and ``AsyncMemoryClient`` (asyncio) have one method
per operation of the HTTP API, typed results, cursor iterators, a resumable
event stream, typed exceptions and retries of idempotent calls. The LangGraph
checkpointer and store live in ``memory_service_client.langgraph`` and the MCP
server in ``memory_service_client.mcp_server`` (optional extras). ``Replica`` is an
offline-first local copy that follows the change feed. ``Worker`` runs Python functions
as the ``task`` steps of workflows.
"""

from memory_service_client._async import AsyncMemoryClient
from memory_service_client._core import NO_RETRIES, OPERATIONS, Operation, RetryPolicy
from memory_service_client._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    MemoryServiceError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
    ValidationError,
)
from memory_service_client._sse import AsyncEventStream, EventStream, SSEDecoder
from memory_service_client._sync import MemoryClient
from memory_service_client._types import (
    Environment,
    Event,
    HistoryEntry,
    Memory,
    NamespaceInfo,
    Page,
    Problem,
    SearchHit,
    SearchResponse,
    Task,
)
from memory_service_client.replica import Offline, Replica
from memory_service_client.sync import Conflict, Policy
from memory_service_client.worker import NonRetryable, Worker

__version__ = "0.1.0"

__all__ = [
    "NO_RETRIES",
    "OPERATIONS",
    "APIError",
    "AsyncEventStream",
    "AsyncMemoryClient",
    "AuthenticationError",
    "BadRequestError",
    "Conflict",
    "ConflictError",
    "Environment",
    "Event",
    "EventStream",
    "HistoryEntry",
    "Memory",
    "MemoryClient",
    "MemoryServiceError",
    "NamespaceInfo",
    "NonRetryable",
    "NotFoundError",
    "Offline",
    "Operation",
    "Page",
    "PayloadTooLargeError",
    "Policy",
    "PreconditionFailedError",
    "Problem",
    "RateLimitedError",
    "Replica",
    "RetryPolicy",
    "SSEDecoder",
    "SearchHit",
    "SearchResponse",
    "ServerError",
    "ServiceUnavailableError",
    "Task",
    "TimeoutError",
    "TransportError",
    "ValidationError",
    "Worker",
]
