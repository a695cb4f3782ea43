"""FAISS's OpenMP team size, per calling thread.

OpenMP keeps the team size per thread: a request thread searching one query wants
a team of one (spinning helpers only steal the cores other requests need), a build
may want all, and a background thread building graphs beside requests is capped.
"""

from __future__ import annotations

import threading
from typing import Any

import faiss

_faiss: Any = faiss  # the SWIG module is only partly typed
_omp = threading.local()


def limit_threads(n: int) -> None:
    """Cap the OpenMP team of the FAISS calls the calling thread makes from now on (a
    background thread that builds graphs beside requests takes one core, not all)."""
    _omp.cap = max(1, n)


def omp_threads(n: int) -> None:
    """OpenMP's team size for this thread (per thread), set only when it changes."""
    n = min(n, getattr(_omp, "cap", n))
    if getattr(_omp, "threads", None) != n:
        _faiss.omp_set_num_threads(n)
        _omp.threads = n
