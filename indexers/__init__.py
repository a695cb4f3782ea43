"""Vector indexes behind one interface: FAISS (the in-process path) and the exact reference.

The pgvector path is SQL on the ``memories`` table (``memory_service.memories.repository``).
"""

from indexers.base import Allow, VectorIndex
from indexers.exact import ExactIndex
from indexers.faiss_index import FaissIndex, FaissParams

__all__ = ["Allow", "ExactIndex", "FaissIndex", "FaissParams", "VectorIndex"]
