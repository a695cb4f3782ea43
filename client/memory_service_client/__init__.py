"""Python client of memory-service; ``Replica`` is an offline-first local copy."""

from memory_service_client.replica import Offline, Replica
from memory_service_client.sync import Conflict, Policy

__all__ = ["Conflict", "Offline", "Policy", "Replica"]
