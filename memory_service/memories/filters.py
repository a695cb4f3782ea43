"""The filter language of memory search and listing, compiled to parameterised SQL.

A filter is a JSON object over memory fields and ``metadata.<key>`` paths::

    {"metadata.topic": "food", "importance": {"$gte": 0.5},
     "$or": [{"user_id": "u1"}, {"metadata.tags": {"$contains": "x"}}]}

``compile_filter`` returns a ``psycopg.sql.Composable`` with ``%s`` placeholders
and the matching parameter list. Field names never reach SQL text: columns come
from a fixed table and metadata paths travel as ``text[]`` parameters. Every
rejection is an ``InvalidFilter`` naming the offending part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from memory_service.errors import FieldError, InvalidFilter
from memory_service.validation import scalar_problem

MAX_DEPTH = 16
MAX_CLAUSES = 256
MAX_IN_VALUES = 1000
MAX_PATH_SEGMENTS = 8

TEXT_FIELDS = ("user_id", "agent_id", "run_id", "namespace")
NUMBER_FIELDS = ("importance",)
TIME_FIELDS = ("created_at", "updated_at")
FIELDS = TEXT_FIELDS + NUMBER_FIELDS + TIME_FIELDS
COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", "$contains", *COMPARISONS)
# whitespace as Python and ECMA-262 regexes each read ``\s``, both: the schema states
# the same class (api/filter_schema.py), whichever engine checks it
SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
PATH_SEGMENT = re.compile(rf"^[^.{SPACE}]{{1,128}}$")


@dataclass
class CompiledFilter:
    clause: sql.Composable
    params: list[Any] = field(default_factory=list)
    spec: Any = None  # the filter it was compiled from (``predicate`` evaluates it in process)


def compile_filter(spec: Any, *, table_alias: str = "m") -> CompiledFilter:
    """Compile ``spec`` (the parsed JSON ``filter``); an empty or missing filter is TRUE."""
    if spec is None:
        return CompiledFilter(sql.SQL("TRUE"))
    compiler = _Compiler(table_alias)
    clause = compiler.node(spec, "filter", 0)
    return CompiledFilter(clause, compiler.params, spec)


class _Compiler:
    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.params: list[Any] = []
        self.clauses = 0

    # -- structure -----------------------------------------------------------
    def node(self, spec: Any, where: str, depth: int) -> sql.Composable:
        if depth > MAX_DEPTH:
            raise _error(where, f"filter is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(spec, dict):
            raise _error(where, "must be an object")
        if not spec:
            return sql.SQL("TRUE")
        parts = [self.entry(key, value, where, depth) for key, value in spec.items()]
        return _join(parts, "AND")

    def entry(self, key: Any, value: Any, where: str, depth: int) -> sql.Composable:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise _error(where, f"filter has more than {MAX_CLAUSES} clauses")
        if not isinstance(key, str):
            raise _error(where, "keys must be strings")
        here = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _error(here, "must be a non-empty list of filters")
            subs = [self.node(v, f"{here}[{i}]", depth + 1) for i, v in enumerate(value)]
            return _join(subs, "AND" if key == "$and" else "OR")
        if key == "$not":
            return sql.SQL("NOT COALESCE(({}), FALSE)").format(self.node(value, here, depth + 1))
        if key.startswith("$"):
            raise _error(here, f"unknown operator {key!r}; expected $and, $or or $not here")
        target = self.target(key, here)
        if isinstance(value, dict):
            if not value:
                raise _error(here, "an operator object must not be empty")
            ops = []
            for op, operand in value.items():
                if op not in OPERATORS:
                    raise _error(
                        f"{here}.{op}",
                        f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}",
                    )
                ops.append(target.apply(self, op, operand, f"{here}.{op}"))
            return _join(ops, "AND")
        return target.apply(self, "$eq", value, here)

    def target(self, key: str, where: str) -> _Target:
        if key in FIELDS:
            return _Column(key, self.alias)
        if key.startswith("metadata."):
            segments = key.split(".")[1:]
            if len(segments) > MAX_PATH_SEGMENTS or not all(PATH_SEGMENT.match(s) for s in segments):
                raise _error(where, "metadata paths are dot-separated keys without spaces")
            return _MetadataPath(segments, self.alias)
        raise _error(
            where,
            f"unknown field {key!r}; expected one of {', '.join(FIELDS)} or metadata.<key>",
        )

    def param(self, value: Any) -> sql.Composable:
        self.params.append(value)
        return sql.Placeholder()


class _Target:
    def apply(self, c: _Compiler, op: str, operand: Any, where: str) -> sql.Composable:
        raise NotImplementedError


class _Column(_Target):
    def __init__(self, name: str, alias: str) -> None:
        self.name = name
        self.col = sql.Identifier(alias, name)

    def value(self, operand: Any, where: str) -> Any:
        if self.name in TEXT_FIELDS:
            if not isinstance(operand, str):
                raise _error(where, f"{self.name} compares with strings")
            return operand
        if self.name in NUMBER_FIELDS:
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                raise _error(where, f"{self.name} compares with numbers")
            problem = scalar_problem(operand)
            if problem is not None:
                raise _error(where, problem)
            return float(operand)
        if not isinstance(operand, str):
            raise _error(where, f"{self.name} compares with RFC 3339 timestamps")
        try:
            moment = datetime.fromisoformat(operand.replace("Z", "+00:00"))
        except ValueError:
            raise _error(where, f"{operand!r} is not an RFC 3339 timestamp") from None
        if moment.tzinfo is None:
            raise _error(where, "timestamps need a time zone")
        return moment

    def apply(self, c: _Compiler, op: str, operand: Any, where: str) -> sql.Composable:
        col = self.col
        if op == "$exists":
            if not isinstance(operand, bool):
                raise _error(where, "$exists takes true or false")
            return sql.SQL("{} IS NOT NULL" if operand else "{} IS NULL").format(col)
        if op in ("$eq", "$ne") and operand is None:
            return sql.SQL("{} IS NULL" if op == "$eq" else "{} IS NOT NULL").format(col)
        if op == "$eq":
            return sql.SQL("{} = {}").format(col, c.param(self.value(operand, where)))
        if op == "$ne":
            return sql.SQL("{} IS DISTINCT FROM {}").format(
                col, c.param(self.value(operand, where))
            )
        if op in COMPARISONS:
            return sql.SQL("{} {} {}").format(
                col, sql.SQL(COMPARISONS[op]), c.param(self.value(operand, where))
            )
        if op in ("$in", "$nin"):
            values = [self.value(v, where) for v in _list_operand(operand, where)]
            clause = sql.SQL("{} = ANY({})").format(col, c.param(values))
            if op == "$in":
                return clause
            return sql.SQL("NOT COALESCE({}, FALSE)").format(clause)
        # $contains on a column: substring match for strings
        if self.name not in TEXT_FIELDS:
            raise _error(where, f"$contains applies to text fields and metadata, not {self.name}")
        if not isinstance(operand, str):
            raise _error(where, "$contains on a text field takes a string")
        return sql.SQL("strpos({}, {}) > 0").format(col, c.param(operand))


class _MetadataPath(_Target):
    def __init__(self, segments: list[str], alias: str) -> None:
        self.segments = segments
        self.alias = alias

    def expr(self, c: _Compiler) -> sql.Composable:
        return sql.SQL("({} #> {}::text[])").format(
            sql.Identifier(self.alias, "metadata"), c.param(self.segments)
        )

    def containment(self, c: _Compiler, operand: Any) -> sql.Composable:
        doc: Any = operand
        for segment in reversed(self.segments):
            doc = {segment: doc}
        return sql.SQL("({} @> {})").format(
            sql.Identifier(self.alias, "metadata"), c.param(Jsonb(doc))
        )

    def apply(self, c: _Compiler, op: str, operand: Any, where: str) -> sql.Composable:
        if op == "$exists":
            if not isinstance(operand, bool):
                raise _error(where, "$exists takes true or false")
            return sql.SQL("{} IS NOT NULL" if operand else "{} IS NULL").format(self.expr(c))
        if op in ("$eq", "$ne"):
            _check_json_scalar(operand, where, allow_null=True)
            clause = self.containment(c, operand)  # served by the GIN index
            return clause if op == "$eq" else sql.SQL("NOT {}").format(clause)
        if op in COMPARISONS:
            _check_json_scalar(operand, where, allow_null=False)
            if isinstance(operand, bool):
                raise _error(where, f"{op} compares numbers or strings, not booleans")
            # placeholders are numbered in text order: build each part in that order
            cmp = sql.SQL(COMPARISONS[op])
            if isinstance(operand, str):
                e1, e2, v = self.expr(c), self.expr(c), c.param(operand)
                return sql.SQL(
                    "(CASE WHEN jsonb_typeof({e1}) = 'string' THEN ({e2} #>> '{{}}') {cmp} {v} "
                    "ELSE FALSE END)"
                ).format(e1=e1, e2=e2, cmp=cmp, v=v)
            # numeric against numeric: a stored number never meets a cast to double, which
            # any number beyond a double's range (stored before the service refused them) fails
            e1, e2, v = self.expr(c), self.expr(c), c.param(_decimal(operand))
            return sql.SQL(
                "(CASE WHEN jsonb_typeof({e1}) = 'number' THEN ({e2})::numeric {cmp} {v} "
                "ELSE FALSE END)"
            ).format(e1=e1, e2=e2, cmp=cmp, v=v)
        if op in ("$in", "$nin"):
            values = _list_operand(operand, where)
            for v in values:
                _check_json_scalar(v, where, allow_null=True)
            clause = sql.SQL("COALESCE({} = ANY({}::jsonb[]), FALSE)").format(
                self.expr(c), c.param([Jsonb(v) for v in values])
            )
            return clause if op == "$in" else sql.SQL("NOT {}").format(clause)
        # $contains: an array holding the element, or a string holding the substring
        _check_json_scalar(operand, where, allow_null=False)
        if isinstance(operand, str):
            e1, e2, arr = self.expr(c), self.expr(c), c.param(Jsonb([operand]))
            e3, sub = self.expr(c), c.param(operand)
            return sql.SQL(
                "(CASE jsonb_typeof({e1}) WHEN 'array' THEN {e2} @> {arr} "
                "WHEN 'string' THEN strpos({e3} #>> '{{}}', {sub}) > 0 ELSE FALSE END)"
            ).format(e1=e1, e2=e2, arr=arr, e3=e3, sub=sub)
        e1, e2, arr = self.expr(c), self.expr(c), c.param(Jsonb([operand]))
        return sql.SQL(
            "(CASE jsonb_typeof({e1}) WHEN 'array' THEN {e2} @> {arr} ELSE FALSE END)"
        ).format(e1=e1, e2=e2, arr=arr)


def _list_operand(operand: Any, where: str) -> list[Any]:
    if not isinstance(operand, list):
        raise _error(where, "takes a list of values")
    if len(operand) > MAX_IN_VALUES:
        raise _error(where, f"takes at most {MAX_IN_VALUES} values")
    return operand


def _check_json_scalar(value: Any, where: str, *, allow_null: bool) -> None:
    if value is None:
        if allow_null:
            return
        raise _error(where, "takes a value, not null")
    if not isinstance(value, str | int | float | bool):
        raise _error(where, "takes a string, number or boolean")
    problem = scalar_problem(value)  # what stored metadata may hold is what it compares with
    if problem is not None:
        raise _error(where, problem)


def _decimal(number: int | float) -> Decimal:
    """A number as ``jsonb`` stores it: a double as its shortest decimal form (what it was
    written as), so that comparing decimals orders stored doubles as the doubles do."""
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


def _join(parts: list[sql.Composable], op: str) -> sql.Composable:
    if len(parts) == 1:
        return parts[0]
    glue = sql.SQL(" AND ") if op == "AND" else sql.SQL(" OR ")
    return sql.SQL("(") + glue.join(parts) + sql.SQL(")")


def _error(where: str, message: str) -> InvalidFilter:
    return InvalidFilter(f"{where}: {message}", errors=[FieldError(where, message)])
