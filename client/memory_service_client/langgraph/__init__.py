"""LangGraph integrations (``pip install memory-service-client[langgraph]``).

``MemoryServiceSaver`` is a checkpointer whose threads are the service's
executions; ``MemoryServiceStore`` is a LangGraph ``BaseStore`` (long-term memory) answered
by the service's keyed memories and vector search.
"""

from memory_service_client.langgraph.checkpoint import MemoryServiceSaver
from memory_service_client.langgraph.store import MemoryServiceStore

__all__ = ["MemoryServiceSaver", "MemoryServiceStore"]
