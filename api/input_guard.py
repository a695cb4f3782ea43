"""Checks every request's JSON body and parameters before a handler sees them.

``check_request`` is a guard on every authenticated router, so each route, today's
and tomorrow's, inherits it: a JSON body must be sent as ``application/json``
(415 otherwise), may nest at most ``MAX_JSON_DEPTH`` arrays/objects, and is
decoded *strictly* against the handler's ``data`` type (``"3"`` is not an
integer; Litestar's own decoding is lenient). Then the decoded values are walked
for what PostgreSQL would refuse or could not give back: NUL characters in any
string or key (also in query and path parameters), floats too small for a
``real`` column, and timestamps that leave the representable range once
converted to UTC. Each failure is a problem document whose ``errors`` names the
field; nothing reaches the database. ``decode_json_text`` applies the same
limits to JSON carried in a query parameter (``?filter=``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
import numpy as np
from litestar.connection import ASGIConnection, Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from memory_service.errors import FieldError, InvalidInput, PayloadTooLarge
from memory_service.validation import MAX_JSON_DEPTH, json_problem

SMALLEST_FLOAT = 1e-30
"""Non-zero numbers in typed fields must be at least this large in magnitude."""
JSON_MEDIA_TYPES = ("application/json",)

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_MARKS = bytes(c for c in range(256) if c not in b'[]{}"')
_STRING_MARKS = re.compile(rb'"[^"]*"')  # a string, once only marks are left
_MSGSPEC_PATH = re.compile(r"at `\$(.*)`$")
_NAMED_FIELD = re.compile(r"(?:unknown|required) field `([^`]*)`")
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, strings ignored.

    Only brackets and quotes decide it, so everything else is deleted first (in C, about
    a millisecond per megabyte) and strings are cut from what is left: a 1,000-vector
    batch of 8 MB shrinks to a few thousand bytes. An escaped character never opens,
    closes or ends anything, so escapes go before that (only when there are any)."""
    if b"[" not in raw and b"{" not in raw:
        return 0
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    marks = _STRING_MARKS.sub(b"", raw.translate(None, _NOT_MARKS))
    codes = np.frombuffer(marks, dtype=np.uint8)
    step = np.where((codes == 0x5B) | (codes == 0x7B), 1, -1)
    return int(np.cumsum(step).max(initial=0))


def bad_request(field: str, message: str) -> ValidationException:
    return ValidationException(detail=f"{field}: {message}", extra=[{"key": field, "message": message}])


def check_depth(raw: bytes, field: str) -> None:
    # a text with no more openings than the limit cannot nest deeper: most bodies stop
    # here, without the full scan (about 0.5 ms for a search body of 384 floats)
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise bad_request(field, f"nested deeper than {MAX_JSON_DEPTH} levels")


def decode_checked(raw: bytes, annotation: Any) -> Any:
    """One JSON document decoded as a body would be: depth, strict types, stored values."""
    check_depth(raw, "body")
    value = _decode_strict(raw, annotation)
    check_values(value, "")
    return value


def decode_json_text(raw: str, field: str) -> Any:
    """Decode JSON from a query parameter with the body's limits; 400/422 on failure."""
    data = raw.encode("utf-8", "surrogatepass")
    check_depth(data, field)
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise bad_request(field, f"not valid JSON ({_reason(exc)})") from None
    check_values(value, field)
    return value


async def check_request(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: parameters and the JSON body of every request under a guarded router."""
    signature = getattr(handler, "parsed_fn_signature", None)
    _check_parameters(connection, signature)
    if signature is None or "data" not in signature.parameters:
        return
    field = signature.parameters["data"]
    media = getattr(field.kwarg_definition, "media_type", RequestEncodingType.JSON)
    if media != RequestEncodingType.JSON:
        return  # forms and uploads are Litestar's to decode
    body = await read_body(connection, connection.app.state.settings.tenant_max_request_bytes)
    if not body:
        return
    _check_media_type(connection.headers.get("content-type"))
    check_depth(body, "body")
    value = _decode_strict(body, field.annotation)
    check_values(value, "")
    if _DECODERS[field.annotation].type is not Any:  # Litestar converts plain JSON itself
        # the handler's ``data`` is this very value: Litestar reads a decoded body from the
        # connection's state before decoding it again, and passes an instance of the
        # declared type through unchanged (a second decode of 384 floats costs ~0.1 ms)
        ScopeState.from_scope(connection.scope).json = value


async def read_body(connection: ASGIConnection[Any, Any, Any, Any], limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to pass ``limit`` bytes:
    from its ``Content-Length`` before anything is read, else by counting the bytes as
    they arrive, so an oversized body costs the limit's worth of reading at most. The
    body is kept where Litestar looks for it, so the handler does not read it again."""
    state = ScopeState.from_scope(connection.scope)
    if state.body is not Empty:
        return state.body
    length = connection.headers.get("content-length", "")
    if limit and length.isdigit() and int(length) > limit:
        raise _too_large(limit, length)
    chunks: list[bytes] = []
    received = 0
    assert isinstance(connection, Request)  # a guarded route with a ``data`` body is HTTP
    async for chunk in connection.stream():
        received += len(chunk)
        if limit and received > limit:
            raise _too_large(limit, f"more than {limit}")
        chunks.append(chunk)
    state.body = body = b"".join(chunks)
    return body


def _too_large(limit: int, size: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a request body holds at most {limit} bytes, not {size}",
        errors=[FieldError("body", f"at most {limit} bytes")],
    )


def _check_parameters(connection: ASGIConnection[Any, Any, Any, Any], signature: Any) -> None:
    fields = signature.parameters if signature is not None else {}
    for name, value in connection.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidInput(f"{name} contains a NUL character", errors=[FieldError(name, "NUL character")])
        field = fields.get(name)
        if field is not None and _is_datetime(field.annotation):
            _check_timestamp_text(name, value)
    for name, value in connection.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInput(f"{name} contains a NUL character", errors=[FieldError(name, "NUL character")])


def _is_datetime(annotation: Any) -> bool:
    return annotation is datetime or datetime in get_args(annotation)


def _check_timestamp_text(name: str, value: str) -> None:
    # Litestar would read a bare number as a Unix time; the contract says RFC 3339
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(name, "an RFC 3339 timestamp with a time zone") from None
    _check_datetime(parsed, name)


def _check_media_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise HTTPException(
        status_code=415,
        detail=f"send the body as application/json, not {media or 'without a Content-Type'}",
    )


def _decode_strict(body: bytes, annotation: Any) -> Any:
    if annotation not in _DECODERS:
        try:
            _DECODERS[annotation] = msgspec.json.Decoder(annotation)
        except TypeError:  # a type only Litestar can decode (a DTO, a custom decoder)
            _DECODERS[annotation] = msgspec.json.Decoder()
    decoder = _DECODERS[annotation]
    try:
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as exc:
            whole = _whole_numbers_as_integers(body, decoder, exc)
            if whole is None:
                raise
            return whole
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        field = match[1].lstrip(".") if match else ""
        named = _NAMED_FIELD.search(message)
        if named:
            field = _join(field, named[1])
        text = _MSGSPEC_PATH.sub("", message).rstrip(" -")
        choices = choices_at(annotation, match[1] if match else "")
        if choices and text.startswith("Invalid enum value"):
            text = f"{text}; must be one of {', '.join(map(str, choices))}"
        raise bad_request(field or "body", text) from None
    except msgspec.DecodeError as exc:
        raise bad_request("body", f"not valid JSON ({_reason(exc)})") from None


def _whole_numbers_as_integers(
    body: bytes, decoder: msgspec.json.Decoder[Any], exc: msgspec.ValidationError
) -> Any:
    """JSON has one number type: ``3.0`` is the integer 3 (JSON Schema agrees), though
    msgspec refuses it for an ``int``. Each refused whole number is made an integer
    and the body decoded again; None when the refusal is about something else."""
    value: Any = None
    for _ in range(MAX_WHOLE_NUMBER_FIXES):
        match = _MSGSPEC_PATH.search(str(exc))
        if "got `float`" not in str(exc) or not match:
            return None
        if value is None:
            value = msgspec.json.decode(body)
        if not _make_integer(value, match[1]):
            return None
        try:
            return decoder.decode(msgspec.json.encode(value))
        except msgspec.ValidationError as again:
            exc = again
    return None


MAX_WHOLE_NUMBER_FIXES = 64
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _make_integer(value: Any, path: str) -> bool:
    parts = [int(index) if index else key for key, index in _PATH_PART.findall(path)]
    if not parts:
        return False
    parent = value
    try:
        for part in parts[:-1]:
            parent = parent[part]
        number = parent[parts[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    if not isinstance(number, float) or not number.is_integer():
        return False
    parent[parts[-1]] = int(number)
    return True


def choices_at(annotation: Any, path: str) -> tuple[Any, ...] | None:
    """The values, in their declared order, that a Literal at ``path`` (``.items[0].mode``)
    of ``annotation`` takes; None when there is no Literal there."""
    hint: Any = annotation
    for key, index in _PATH_PART.findall(path):
        hint = _step(hint, key, bool(index))
        if hint is None:
            return None
    return _choices(hint)


def _members(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) is Annotated:
        return _members(get_args(hint)[0])
    if get_origin(hint) in (Union, UnionType):
        return tuple(m for arg in get_args(hint) for m in _members(arg))
    return (hint,)


def _step(hint: Any, key: str, is_index: bool) -> Any:
    for member in _members(hint):
        origin = get_origin(member)
        if is_index and origin in (list, tuple):
            return get_args(member)[0]
        if not is_index and isinstance(member, type) and issubclass(member, msgspec.Struct):
            return get_type_hints(member, include_extras=True).get(key)
        if not is_index and origin is dict:
            return get_args(member)[1]
    return None


def _choices(hint: Any) -> tuple[Any, ...] | None:
    for member in _members(hint):
        if get_origin(member) is Literal:
            return get_args(member)
        if get_origin(member) is list:  # a repeatable parameter
            return _choices(get_args(member)[0])
    return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text:
        return "the text ends early or holds an invalid escape such as a lone surrogate"
    return text.removeprefix("JSON is malformed: ")


def check_values(value: Any, path: str) -> None:
    """Walk decoded input for values the database would refuse or the indexes could not
    compare; 422 naming the field. Plain JSON follows the service's one rule
    (``memory_service.validation.json_problem``); typed fields are checked here."""
    if isinstance(value, msgspec.Struct):
        numbers, floats = _number_fields(type(value))
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if item is None or name in numbers:
                continue  # typed numbers hold nothing the database refuses
            if isinstance(item, float) and name in floats:
                _check_float(item, _join(path, name))
            else:
                check_values(item, _join(path, name))
    elif isinstance(value, datetime):
        _check_datetime(value, path)
    else:
        # the body's depth was checked on its text; structs inside restart the count
        found = json_problem(value, path, depth=MAX_JSON_DEPTH + 1, other=_check_typed)
        if found is not None:
            _invalid(*found)


def _check_typed(value: Any, path: str) -> None:
    """A decoded value that is not plain JSON: a struct or a timestamp is checked; the
    rest (UUIDs, enums, unset fields) holds nothing the database refuses."""
    if isinstance(value, msgspec.Struct | datetime):
        check_values(value, path)


_NUMBER_FIELDS: dict[type, tuple[frozenset[str], frozenset[str]]] = {}
_WHOLE_NUMBERS = (msgspec.inspect.IntType, msgspec.inspect.BoolType, msgspec.inspect.NoneType)


def _number_fields(struct: type) -> tuple[frozenset[str], frozenset[str]]:
    """The fields of a Struct typed as whole numbers or lists of numbers (or None), which
    the walk has nothing to check in (an embedding's floats are validated with it), and
    those typed as a float, which go to a ``real`` column. A float in a free-form field
    (``Any``: a step's input, say) is a JSON number like any in metadata, stored as is."""
    if struct not in _NUMBER_FIELDS:
        info: Any = msgspec.inspect.type_info(struct)
        _NUMBER_FIELDS[struct] = (
            frozenset(f.name for f in info.fields if _numbers(f.type)),
            frozenset(f.name for f in info.fields if _typed_float(f.type)),
        )
    return _NUMBER_FIELDS[struct]


def _typed_float(t: Any) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        return _typed_float(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_typed_float(member) for member in t.types)
    return isinstance(t, msgspec.inspect.FloatType)


def _numbers(t: Any, *, in_list: bool = False) -> bool:
    if isinstance(t, msgspec.inspect.UnionType):
        return all(_numbers(member, in_list=in_list) for member in t.types)
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return _numbers(t.item_type, in_list=True)
    return isinstance(t, _WHOLE_NUMBERS) or (in_list and isinstance(t, msgspec.inspect.FloatType))


def _check_float(value: float, path: str) -> None:
    if value != 0.0 and abs(value) < SMALLEST_FLOAT:
        _invalid(path, f"too small to store: use 0 or a magnitude of at least {SMALLEST_FLOAT:g}")


def _check_datetime(value: datetime, path: str) -> None:
    if value.tzinfo is None:
        return  # the services refuse times without a zone with their own message
    try:
        value.astimezone(UTC)
    except OverflowError:
        _invalid(path, "outside the years 1..9999 once converted to UTC")


def _invalid(path: str, message: str) -> None:
    field = path or "body"
    raise InvalidInput(f"{field}: {message}", errors=[FieldError(field, message)])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
