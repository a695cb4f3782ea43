"""The rules the service enforces, stated in its OpenAPI document.

Litestar writes each route's types into the document, but it drops some bounds
of optional fields (``gt``, a ``ge`` of 0, ``min_length``) and knows nothing of
the checks the services make on values: ids are UUIDs, cursors have one shape,
``If-Match`` is a version number, names have character sets, text must not be
blank, no string may hold a NUL character, an embedding has the configured
dimension, and a filter is a small typed language. ``state_rules`` completes the
served document with all of that, so generated clients and property-based
testers see every rule the service answers 422 for:

- every request struct's properties are replaced by msgspec's own schema of the
  field (exact bounds), then completed from ``PROPERTY_RULES``;
- parameters get their formats from ``PARAMETER_RULES`` (by name) and
  ``PATH_PARAMETER_RULES`` (by path and name);
- every request string excludes NUL and every free-form object's keys do too;
- ``Filter`` (``api.filter_schema``) describes the filter language.

Rules that JSON Schema cannot state exactly get the closest schema that is no
looser than the service; docs/api-contract.md lists them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, get_args

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.routes import HTTPRoute

from api.filter_schema import FILTER_COMPONENTS
from api.input_guard import SMALLEST_FLOAT
from api.routes.memory_import import NDJSON_MEDIA_TYPES
from api.rules import (
    BODY_RULES,
    JSON_REF,
    JSON_VALUE,
    NO_NUL,
    NON_EMPTY_LISTS,
    OBJECT_RULE,
    PARAMETER_RULES,
    PATH_PARAMETER_RULES,
    REPLACE,
    property_rules,
)
from api.schemas import Strict
from memory_service.config import Settings
from memory_service.transfer.lines import Line

Document = dict[str, Any]


def state_rules(app: Litestar, settings: Settings, dimension: int) -> None:
    """Complete the served OpenAPI document in place, once (the lifespan calls it when
    the model, and so the embedding dimension, is known)."""
    if app.state.get("contract_stated"):
        return
    app.state.contract_stated = True
    # the plugin builds the document's dict once and serves that same dict afterwards
    document: Document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    schemas: dict[str, Any] = document["components"]["schemas"]
    schemas.update(copy.deepcopy(FILTER_COMPONENTS))
    schemas["JsonValue"] = copy.deepcopy(JSON_VALUE)
    requests = _request_structs(app)
    for name, struct in _component_names(schemas, requests):
        _exact_properties(schemas[name], struct)
        if issubclass(struct, Strict):
            schemas[name]["additionalProperties"] = False
    for (name, prop), rule in property_rules(settings, dimension).items():
        if prop == OBJECT_RULE and name in schemas:
            schemas[name].update(rule)
            continue
        properties = schemas.get(name, {}).get("properties", {})
        if prop not in properties:
            continue
        if REPLACE in rule:
            properties[prop] = copy.deepcopy(rule[REPLACE])
        else:
            _merge(properties[prop], rule)
    _declare_streamed_bodies(document)
    for schema in schemas.values():
        _no_overlapping_any(schema)
    request_names = {name for name, _ in _component_names(schemas, requests)}
    for name in request_names:
        _exclude_nul(schemas[name], schemas)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                _parameter(path, method, parameter)
            if (path, method) in NON_EMPTY_LISTS:
                for media in operation.get("requestBody", {}).get("content", {}).values():
                    for option in media.get("schema", {}).get("oneOf", []):
                        if option.get("type") == "array":
                            option["minItems"] = 1
            if (path, method) in BODY_RULES:
                for media in operation.get("requestBody", {}).get("content", {}).values():
                    media["schema"] = BODY_RULES[(path, method)]()
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                if "$ref" not in media.get("schema", {}):
                    _exclude_nul(media.get("schema", {}), schemas)


def _declare_streamed_bodies(document: Document) -> None:
    """The NDJSON bodies the import routes read as streams, line by line."""
    kinds = [t.__struct_config__.tag for t in get_args(Line)]
    lines = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": kinds}},
        },
    }
    # a bad line is reported in the answer's `errors`, not refused: any line is acceptable
    memory_lines = {
        "description": "lines, each with the fields of a MemoryCreate "
        "(#/components/schemas/MemoryCreate)",
    }
    bodies = {
        "/v1/memories/import": (
            NDJSON_MEDIA_TYPES,
            memory_lines,
            "One memory per line (the fields of a POST /v1/memories item).",
        ),
        "/v1/import": (
            (NDJSON_MEDIA_TYPES[0],),
            lines,
            (
                "An export: a header line, entity lines, an end line with the count of each "
                "type (see docs/export-import.md)."
            ),
        ),
    }
    for path, (media_types, schema, description) in bodies.items():
        operation = document["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        operation["requestBody"] = {
            "required": True,
            "description": description + " Each item of the array is one line.",
            "content": {media: {"schema": copy.deepcopy(schema)} for media in media_types},
        }
        problem = copy.deepcopy(operation["responses"]["422"])
        problem["description"] = "The stream is over a configured limit"
        operation["responses"].setdefault("413", problem)


def _parameter(path: str, method: str, parameter: dict[str, Any]) -> None:
    name = parameter["name"]
    rule = PATH_PARAMETER_RULES.get((path, name)) or PARAMETER_RULES.get(
        (parameter["in"], name)
    )
    if rule is not None and "content" in rule:
        parameter.pop("schema", None)
        parameter["content"] = copy.deepcopy(rule["content"])
        return
    schema = parameter.setdefault("schema", {})
    if parameter["in"] in ("header", "path"):
        _drop_null(schema)  # a header or a path segment is text, never null
    if rule is not None:
        if rule.get("required"):
            parameter["required"] = True
            _drop_null(schema)
        _merge(schema, {k: v for k, v in rule.items() if k != "required"})
    _exclude_nul(schema, {})


def _no_overlapping_any(schema: Any) -> None:
    """``oneOf: [{}, {"type": "null"}]`` (Litestar's ``Any | None``) matches null twice,
    which ``oneOf`` forbids: it is any value."""
    if isinstance(schema, dict):
        if any(option == {} for option in schema.get("oneOf", [])):
            del schema["oneOf"]
        for value in schema.values():
            _no_overlapping_any(value)
    elif isinstance(schema, list):
        for value in schema:
            _no_overlapping_any(value)


def _drop_null(schema: dict[str, Any]) -> None:
    for key in ("oneOf", "anyOf"):
        options = schema.get(key)
        if options:
            kept = [o for o in options if o.get("type") != "null"]
            schema.pop(key)
            if len(kept) == 1:
                schema.update(kept[0])
            else:
                schema[key] = kept
    if isinstance(schema.get("type"), list):
        schema["type"] = [t for t in schema["type"] if t != "null"]
    if isinstance(schema.get("enum"), list):
        schema["enum"] = [e for e in schema["enum"] if e is not None]


def _merge(schema: dict[str, Any], rule: dict[str, Any]) -> None:
    """Apply ``rule`` to ``schema``: to its string/number member when it is a union."""
    for key in ("oneOf", "anyOf"):
        options = schema.get(key)
        if options:
            for option in options:
                if option.get("type") != "null" and "$ref" not in option:
                    _merge(option, rule)
            return
    for key, value in rule.items():
        schema[key] = copy.deepcopy(value)


# keys that describe a schema without constraining it: ``{"default": null}`` is any value
ANNOTATIONS = {"default", "description", "title", "examples"}


def _exclude_nul(schema: Any, schemas: dict[str, Any], seen: set[int] | None = None) -> None:
    """Every string without a pattern of its own refuses NUL; so does every object key."""
    seen = seen if seen is not None else set()
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "string" in kinds and not ({"pattern", "enum", "format", "const"} & schema.keys()):
        schema["pattern"] = NO_NUL
    if "object" in kinds and schema.get("additionalProperties") is not False:
        schema.setdefault("propertyNames", {"pattern": NO_NUL})
        if "properties" not in schema and "patternProperties" not in schema:
            schema.setdefault("additionalProperties", {})
    for child in _children(schema):
        if isinstance(child, dict) and not child.keys() - ANNOTATIONS:
            child["$ref"] = JSON_REF  # any value: any value without NUL
        else:
            _exclude_nul(child, schemas, seen)


def _children(schema: dict[str, Any]) -> Iterator[Any]:
    for key in ("oneOf", "anyOf", "allOf"):
        yield from schema.get(key, [])
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(schema.get(key), dict):
            yield schema[key]
    yield from schema.get("properties", {}).values()
    yield from schema.get("patternProperties", {}).values()


def _exact_properties(component: dict[str, Any], struct: type[msgspec.Struct]) -> None:
    """Replace each property Litestar derived with msgspec's exact schema of the field,
    where that schema stands alone (a field of another struct keeps Litestar's $ref)."""
    try:
        (exact,), defs = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    except TypeError:  # a default msgspec cannot write (Raw): Litestar's schema stays
        return
    own = defs[exact["$ref"].rsplit("/", 1)[1]] if "$ref" in exact else exact
    for name, prop in own.get("properties", {}).items():
        derived = component.get("properties", {}).get(name)
        # msgspec writes a datetime as a plain string; Litestar's says date-time
        if derived is None or "$ref" in _text(prop) or "date-time" in _text(derived):
            continue
        description = derived.get("description")
        component["properties"][name] = prop
        if description and "description" not in prop:
            prop["description"] = description
        _storable_floats(prop)


def _text(schema: Any) -> str:
    return msgspec.json.encode(schema).decode()


def _storable_floats(schema: dict[str, Any]) -> None:
    """A number field refuses non-zero magnitudes below ``SMALLEST_FLOAT`` (api.input_guard)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "number":
            option["not"] = {
                "exclusiveMinimum": -SMALLEST_FLOAT,
                "exclusiveMaximum": SMALLEST_FLOAT,
                "not": {"const": 0},
            }


def _request_structs(app: Litestar) -> set[type[msgspec.Struct]]:
    found: set[type[msgspec.Struct]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            signature = getattr(handler, "parsed_fn_signature", None)
            data = signature.parameters.get("data") if signature is not None else None
            if data is not None:
                _structs_in(data.annotation, found)
    return found


def _structs_in(annotation: Any, found: set[type[msgspec.Struct]]) -> None:
    try:
        info = msgspec.inspect.multi_type_info([annotation])[0]
    except (TypeError, ValueError):
        return
    todo: list[Any] = [info]
    while todo:
        item = todo.pop()
        if isinstance(item, msgspec.inspect.StructType):
            if item.cls in found:
                continue
            found.add(item.cls)
            todo.extend(f.type for f in item.fields)
        elif isinstance(item, msgspec.inspect.UnionType):
            todo.extend(item.types)
        elif isinstance(item, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
            todo.append(item.item_type)
        elif isinstance(item, msgspec.inspect.DictType):
            todo.append(item.value_type)


def _component_names(
    schemas: dict[str, Any], structs: set[type[msgspec.Struct]]
) -> Iterator[tuple[str, type[msgspec.Struct]]]:
    """Litestar names a component after its class, prefixed by the module when two
    classes share a name (``execution_schemas_ForkIn``)."""
    for struct in structs:
        prefixed = f"{struct.__module__.rsplit('.', 1)[-1]}_{struct.__name__}"
        for name in (prefixed, struct.__name__):
            if name in schemas:
                yield name, struct
                break
