"""The filter language (``memory_service.memories.filters``) as JSON Schema components.

``Filter`` is an object over the memory fields and ``metadata.<key>`` paths
(``patternProperties``), combined with ``$and``/``$or`` (non-empty lists of
filters) and ``$not`` (a filter). A field's value is its equality operand or an
object of operators; each field takes the operand types its column compares
with: text fields strings, ``importance`` numbers, the times RFC 3339 strings,
metadata any JSON scalar (comparisons: strings or numbers). ``$contains`` does
not apply to numbers or times. Built from the parser's own tables, so a field or
an operator added there shows up here; ``tests/test_filter_schema.py`` checks
that the parser accepts what the schema describes and refuses the rest.
"""

from __future__ import annotations

from typing import Any

from memory_service.memories.filters import (
    COMPARISONS,
    MAX_IN_VALUES,
    MAX_PATH_SEGMENTS,
    NUMBER_FIELDS,
    SPACE,
    TEXT_FIELDS,
    TIME_FIELDS,
)
from memory_service.validation import MAX_SAFE_INTEGER

FILTER_REF = "#/components/schemas/Filter"
# a metadata path: dot-separated keys without spaces, dots or NUL
METADATA_PATH = rf"^metadata(\.[^.{SPACE}\x00]{{1,128}}){{1,{MAX_PATH_SEGMENTS}}}$"
_NO_NUL = r"^[^\x00]*$"
# a JSON number the service can store and compare: an integer within ±2**53 (a double
# holds those exactly) or any other finite number (``validation.scalar_problem``)
SAFE_NUMBER = {
    "type": "number",
    "not": {"type": "integer", "not": {"minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operators(value: dict[str, Any], *, ordered: dict[str, Any], contains: bool) -> dict[str, Any]:
    """The operator object of a field whose operands are ``value`` (``ordered`` for the
    comparisons); ``$eq``/``$ne``/``$in``/``$nin`` also take null."""
    nullable = {"anyOf": [value, {"type": "null"}]}
    listed = {"type": "array", "maxItems": MAX_IN_VALUES, "items": nullable}
    properties: dict[str, Any] = {"$eq": nullable, "$ne": nullable, "$exists": {"type": "boolean"}}
    properties.update({op: ordered for op in COMPARISONS})
    properties.update({"$in": listed, "$nin": listed})
    if contains:
        properties["$contains"] = value
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": properties,
    }


def _condition(name: str) -> dict[str, Any]:
    return {"anyOf": [_ref(f"{name}Value"), {"type": "null"}, _ref(f"{name}Operators")]}


def _column_list(value: dict[str, Any]) -> dict[str, Any]:
    # a column's $in/$nin compares each value with the column: null is refused there
    return {"type": "array", "maxItems": MAX_IN_VALUES, "items": value}


def _components() -> dict[str, Any]:
    text = {"type": "string", "pattern": _NO_NUL}
    number = SAFE_NUMBER
    time = {"type": "string", "format": "date-time"}
    scalar = {"anyOf": [text, number, {"type": "boolean"}]}
    text_ops = _operators(text, ordered=text, contains=True)
    number_ops = _operators(number, ordered=number, contains=False)
    time_ops = _operators(time, ordered=time, contains=False)
    for ops, value in ((text_ops, text), (number_ops, number), (time_ops, time)):
        ops["properties"].update({"$in": _column_list(value), "$nin": _column_list(value)})
        ops["properties"]["$eq"] = ops["properties"]["$ne"] = {"anyOf": [value, {"type": "null"}]}
    metadata_ops = _operators(scalar, ordered={"anyOf": [text, number]}, contains=True)
    fields: dict[str, Any] = {}
    fields.update({name: _ref("TextCondition") for name in TEXT_FIELDS})
    fields.update({name: _ref("NumberCondition") for name in NUMBER_FIELDS})
    fields.update({name: _ref("TimeCondition") for name in TIME_FIELDS})
    filter_schema = {
        "type": "object",
        "description": "The filter language: fields and metadata.<key> paths, each equal to "
        "a value or matching an object of operators ($eq $ne $gt $gte $lt $lte $in $nin "
        "$exists $contains); $and/$or take non-empty lists of filters, $not a filter. "
        "At most 16 levels deep and 256 clauses.",
        "properties": {
            "$and": {"type": "array", "minItems": 1, "items": {"$ref": FILTER_REF}},
            "$or": {"type": "array", "minItems": 1, "items": {"$ref": FILTER_REF}},
            "$not": {"$ref": FILTER_REF},
            **fields,
        },
        "patternProperties": {METADATA_PATH: _ref("MetadataCondition")},
        "additionalProperties": False,
    }
    return {
        "Filter": filter_schema,
        "TextValue": text,
        "TextOperators": text_ops,
        "TextCondition": _condition("Text"),
        "NumberValue": number,
        "NumberOperators": number_ops,
        "NumberCondition": _condition("Number"),
        "TimeValue": time,
        "TimeOperators": time_ops,
        "TimeCondition": _condition("Time"),
        "MetadataValue": scalar,
        "MetadataOperators": metadata_ops,
        "MetadataCondition": _condition("Metadata"),
    }


FILTER_COMPONENTS: dict[str, Any] = _components()
