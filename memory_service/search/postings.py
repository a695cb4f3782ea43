"""Posting lists over held rows: which seqs have a scope value or a top-level metadata value.

They let the exact path of a filtered search find its candidates in process: the
scope and the filter's top-level equalities (``{"metadata.topic": "food"}``,
``{"$in": [...]}``, ``user_id``...) narrow the rows to the intersection of their
lists, and ``RowCheck`` then decides each candidate exactly. A posting list never
misses a matching row, so the answer is the one SQL gives. When every clause is such
an equality, the intersection is the answer itself and only expiry is left to check
(``narrow``): scoring a thousand candidates' predicates cost milliseconds. Keys are JSON-typed:
``1`` and ``1.0`` share a list, ``true`` does not.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from memory_service.memories.filters import TEXT_FIELDS
from memory_service.memories.models import SCOPE_FIELDS, Memory, Scope
from memory_service.validation import MAX_SAFE_INTEGER

Key = tuple[str, str, Any]
ENTRY_BYTES = 90  # one seq in one posting set


_UNKEYED = ("unkeyed", None)  # a scalar without an exact key


def _typed(value: Any) -> tuple[str, Any] | None:
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return (
            ("number", float(value)) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _UNKEYED
        )
    if isinstance(value, float):
        return "number", value
    if isinstance(value, str):
        return "string", value
    return None  # objects and arrays are not posted


def keys_of(memory: Memory) -> tuple[list[Key], bool]:
    """The row's posting keys, and whether every posted value had one."""
    keys: list[Key] = [
        (name, "string", value) for name in SCOPE_FIELDS if (value := getattr(memory, name))
    ]
    complete = True
    metadata = memory.metadata if isinstance(memory.metadata, dict) else {}
    for name, value in metadata.items():
        typed = _typed(value)
        if typed is _UNKEYED:
            complete = False
        elif typed is not None:
            keys.append((f"metadata.{name}", *typed))
    return keys, complete


class Postings:
    def __init__(self) -> None:
        self._lists: defaultdict[Key, set[int]] = defaultdict(set)
        # rows holding a value without a key: candidates of every metadata clause
        self.unposted: set[int] = set()

    def add(self, memory: Memory) -> int:
        """Post the row; it joins ``unposted`` when a value of it has no key."""
        keys, complete = keys_of(memory)
        for key in keys:
            self._lists[key].add(memory.seq)
        if not complete:
            self.unposted.add(memory.seq)
        return len(keys) * ENTRY_BYTES

    def remove(self, memory: Memory) -> int:
        keys, _ = keys_of(memory)
        self.unposted.discard(memory.seq)
        for key in keys:
            seqs = self._lists.get(key)
            if seqs is not None:
                seqs.discard(memory.seq)
                if not seqs:
                    del self._lists[key]
        return len(keys) * ENTRY_BYTES

    def scope_members(self, name: str, value: str) -> set[int]:
        """The seqs whose scope field ``name`` is ``value`` (the set itself: do not change it)."""
        return self._lists.get((name, "string", value), set())

    def candidates(self, scope: Scope, spec: Any) -> set[int] | None:
        """A superset of the rows that match scope and filter, or None when neither
        names a posted value to narrow by."""
        return self.narrow(scope, spec)[0]

    def narrow(self, scope: Scope, spec: Any) -> tuple[set[int] | None, bool]:
        """``candidates``, and whether they are exactly the rows in scope that match the
        filter (every clause a posted equality), so that only expiry is left to check."""
        constraints, exact = self._constraints(scope, spec)
        found: set[int] | None = None
        for allowed in constraints:
            found = allowed if found is None else found & allowed
            if not found:
                break
        return found, exact and found is not None

    def _constraints(self, scope: Scope, spec: Any) -> tuple[list[set[int]], bool]:
        given = scope.given()
        out = [self._lists.get((n, "string", v), set()) for n, v in given.items()]
        exact = all(isinstance(v, str) and v for v in given.values())
        clauses = list(spec.items()) if isinstance(spec, dict) else []
        for key, value in clauses:
            if key == "$and":
                for sub in value:
                    clauses.extend(sub.items())
                continue
            posted = key in TEXT_FIELDS or (key.startswith("metadata.") and key.count(".") == 1)
            values = _equal_to(value) if posted else None
            if values is not None and (key.startswith("metadata.") or None not in values):
                allowed = self._union(key, values)
                if key.startswith("metadata.") and self.unposted:
                    allowed, exact = allowed | self.unposted, False  # candidates, no verdict
                out.append(allowed)
                exact = exact and all(_exact_value(key, v) for v in values)
            else:
                exact = False
        return out, exact

    def _union(self, key: str, values: list[Any]) -> set[int]:
        seqs: set[int] = set()
        for value in values:
            typed = _typed(value)
            if typed is not None and typed is not _UNKEYED:
                seqs |= self._lists.get((key, *typed), set())
        return seqs


def _exact_value(key: str, value: Any) -> bool:
    """Whether a row's posting for this value is exactly the filter's verdict: a scalar
    (objects and arrays are not posted) and, for a scope field, a non-empty string (an
    empty one is not posted)."""
    if key in TEXT_FIELDS:
        return isinstance(value, str) and bool(value)
    typed = _typed(value)
    return typed is not None and typed is not _UNKEYED


def _equal_to(value: Any) -> list[Any] | None:
    """The values a clause requires equality with (one of), or None if it does not."""
    if not isinstance(value, dict):
        return [value]
    if set(value) == {"$eq"}:
        return [value["$eq"]]
    if set(value) == {"$in"}:
        return list(value["$in"])
    return None
