"""The filter language evaluated in process, with exactly the SQL semantics of ``filters``.

``compile_predicate(spec)`` turns a filter that ``filters.compile_filter`` has
already accepted into a function ``Memory -> bool`` that answers what the SQL
clause would: a missing field or path is SQL NULL, which fails a comparison,
``$not``/``$nin`` coalesce NULL to "not matching", metadata equality is JSON
containment (objects only along the path, type-strict values, ``1 == 1.0`` but
``true != 1``), ``metadata`` comparisons only between a JSON number and a number
or a JSON string and a string. String ordering (``$gt`` on a string) depends on
the database's collation, so a filter that has one is not compiled: the answer
is ``None`` and the caller re-checks in SQL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memory_service.memories.filters import COMPARISONS, TEXT_FIELDS, TIME_FIELDS, CompiledFilter
from memory_service.memories.models import Memory, Scope

Predicate = Callable[[Memory], bool]
_MISSING = object()
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


@dataclass(frozen=True, slots=True)
class RowCheck:
    """What the SQL re-check of a search asks of a row (visible, in scope, matching the
    filter), answered in process."""

    scope: tuple[tuple[str, str], ...]
    predicate: Predicate | None

    @classmethod
    def build(cls, scope: Scope, flt: CompiledFilter | None) -> RowCheck | None:
        """The check, or None when the filter needs the database."""
        predicate = None
        if flt is not None:
            predicate = compile_predicate(flt.spec)
            if predicate is None:
                return None
        return cls(tuple(scope.given().items()), predicate)

    def matches(self, row: Memory, now: datetime) -> bool:
        if row.expires_at is not None and row.expires_at <= now:
            return False
        for name, value in self.scope:
            if getattr(row, name) != value:
                return False
        return self.predicate is None or self.predicate(row)


class NotInProcess(Exception):
    """The filter needs the database to decide (collation-dependent ordering)."""


def compile_predicate(spec: Any) -> Predicate | None:
    if not spec:
        return lambda memory: True
    try:
        return _node(spec)
    except NotInProcess:
        return None


def _node(spec: dict[str, Any]) -> Predicate:
    parts = [_entry(key, value) for key, value in spec.items()]
    return parts[0] if len(parts) == 1 else lambda m: all(p(m) for p in parts)


def _entry(key: str, value: Any) -> Predicate:
    if key in ("$and", "$or"):
        subs = [_node(v) if v else (lambda m: True) for v in value]
        if key == "$and":
            return lambda m: all(p(m) for p in subs)
        return lambda m: any(p(m) for p in subs)
    if key == "$not":
        inner = _node(value) if value else (lambda m: True)
        return lambda m: not inner(m)
    ops = value.items() if isinstance(value, dict) else [("$eq", value)]
    if key.startswith("metadata."):
        checks = [_metadata(key.split(".")[1:], op, operand) for op, operand in ops]
    else:
        checks = [_column(key, op, operand) for op, operand in ops]
    return checks[0] if len(checks) == 1 else lambda m: all(c(m) for c in checks)


# -- memory fields ---------------------------------------------------------------------------
def _column_value(name: str, operand: Any) -> Any:
    if name in TIME_FIELDS:
        return datetime.fromisoformat(operand.replace("Z", "+00:00"))
    if name in TEXT_FIELDS:
        return operand
    return float(operand)


def _column(name: str, op: str, operand: Any) -> Predicate:
    def get(m: Memory) -> Any:
        return getattr(m, name)

    if op == "$exists":
        return (lambda m: get(m) is not None) if operand else (lambda m: get(m) is None)
    if op in ("$eq", "$ne") and operand is None:
        return (lambda m: get(m) is None) if op == "$eq" else (lambda m: get(m) is not None)
    if op == "$contains":
        return lambda m: get(m) is not None and operand in get(m)
    if op in ("$in", "$nin"):
        values = {_column_value(name, v) for v in operand}
        if op == "$in":
            return lambda m: get(m) is not None and get(m) in values
        return lambda m: get(m) is None or get(m) not in values
    value = _column_value(name, operand)
    if op == "$eq":
        return lambda m: get(m) is not None and get(m) == value
    if op == "$ne":
        return lambda m: get(m) != value
    if name in TEXT_FIELDS:
        raise NotInProcess(name)
    compare = _CMP[op]
    return lambda m: get(m) is not None and compare(get(m), value)


# -- metadata paths --------------------------------------------------------------------------
def _walk(doc: Any, segments: list[str], *, arrays: bool) -> Any:
    """``doc #> path`` (``arrays``: integer segments index arrays) or a containment walk."""
    for segment in segments:
        if isinstance(doc, dict):
            doc = doc.get(segment, _MISSING)
        elif arrays and isinstance(doc, list) and _is_index(segment):
            index = int(segment)
            doc = doc[index] if -len(doc) <= index < len(doc) else _MISSING
        else:
            return _MISSING
        if doc is _MISSING:
            return _MISSING
    return doc


def _is_index(segment: str) -> bool:
    return segment.lstrip("-").isdigit()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """jsonb equality of scalars: type-strict, numbers by value."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    return type(a) is type(b) and a == b


def _metadata(segments: list[str], op: str, operand: Any) -> Predicate:
    def at(m: Memory) -> Any:
        return _walk(m.metadata, segments, arrays=True)

    if op == "$exists":
        return (lambda m: at(m) is not _MISSING) if operand else (lambda m: at(m) is _MISSING)
    if op in ("$eq", "$ne"):
        # containment: objects all the way, and the value itself a scalar of the same type
        def contained(m: Memory) -> bool:
            found = _walk(m.metadata, segments, arrays=False)
            return found is not _MISSING and json_equal(found, operand)

        return contained if op == "$eq" else (lambda m: not contained(m))
    if op in ("$in", "$nin"):
        def member(m: Memory) -> bool:
            found = at(m)
            return found is not _MISSING and any(json_equal(found, v) for v in operand)

        return member if op == "$in" else (lambda m: not member(m))
    if op in COMPARISONS:
        return _metadata_compare(at, op, operand)
    return _metadata_contains(at, operand)


def _metadata_compare(at: Callable[[Memory], Any], op: str, operand: Any) -> Predicate:
    if isinstance(operand, str):
        raise NotInProcess(op)
    compare = _CMP[op]

    def check(m: Memory) -> bool:
        found = at(m)
        return _is_number(found) and compare(found, operand)

    return check


def _metadata_contains(at: Callable[[Memory], Any], operand: Any) -> Predicate:
    def check(m: Memory) -> bool:
        found = at(m)
        if isinstance(found, list):
            scalars = (item for item in found if not isinstance(item, dict | list))
            return any(json_equal(item, operand) for item in scalars)
        if isinstance(found, str) and isinstance(operand, str):
            return operand in found
        return False

    return check
