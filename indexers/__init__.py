"""Vector indexes behind one interface: FAISS, pgvector and the exact reference."""

from indexers.base import Allow, VectorIndex
from indexers.exact import ExactIndex
from indexers.faiss_index import FaissIndex, FaissParams
from indexers.pgvector_index import PgvectorIndex

__all__ = ["Allow", "ExactIndex", "FaissIndex", "FaissParams", "PgvectorIndex", "VectorIndex"]
