"""State arithmetic on JSON documents: apply, make and summarise RFC 6902 patches.

Everything here is pure and synchronous; ``jsonpatch`` does the patching. Two
things the library leaves to its caller are settled here. First, a failing
operation is reported by its index and path (``Conflict``), and a malformed one
as ``InvalidInput``. Second, the diff compares values as JSON text (``1``, ``1.0`` and
``true`` differ, as they must), and a patch with moves is checked by applying it,
falling back to replacing the whole document if it does not reproduce the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jsonpatch
import jsonpointer
import msgspec

from memory_service.errors import Conflict, FieldError, InvalidInput

JSON = Any
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_encoder = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()


def encode(value: JSON) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes | str) -> JSON:
    return _decoder.decode(data)


def _json_text(value: JSON) -> str:
    return _encoder.encode(value).decode()


def canonical(value: JSON) -> bytes:
    """Bytes that are equal exactly when two JSON documents are (key order aside)."""
    return _canonical.encode(value)


def copy(value: JSON) -> JSON:
    """A deep copy of a JSON document (a JSON round trip: faster than copy.deepcopy)."""
    return _decoder.decode(_encoder.encode(value))


def check_patch(patch: Any, where: str) -> list[dict[str, Any]]:
    """The operations of a well-formed patch, or ``InvalidInput`` naming the first bad one."""
    if not isinstance(patch, list):
        raise InvalidInput(
            f"{where} must be a list of RFC 6902 operations",
            errors=[FieldError(where, "a JSON Patch array")],
        )
    for i, op in enumerate(patch):
        bad = None
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or op["op"] not in _OPS:
            bad = "an object whose op is add, remove, replace, move, copy or test"
        elif not isinstance(op.get("path"), str):
            bad = "needs a string path"
        elif op["op"] in ("add", "replace", "test") and "value" not in op:
            bad = f"{op['op']} needs a value"
        elif op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            bad = f"{op['op']} needs a string from"
        if bad:
            raise InvalidInput(
                f"{where}[{i}] is not a valid operation: {bad}",
                errors=[FieldError(f"{where}[{i}]", bad)],
            )
    return patch


class CachedPointer(jsonpointer.JsonPointer):
    """A ``JsonPointer`` parsed once per distinct path: states are patched at the same
    paths step after step, and parsing dominated applying a patch."""

    _parsed: ClassVar[dict[str, CachedPointer]] = {}
    _MAX = 100_000

    def __new__(cls, pointer: str) -> CachedPointer:
        hit = cls._parsed.get(pointer)
        if hit is None:
            hit = super().__new__(cls)
            jsonpointer.JsonPointer.__init__(hit, pointer)
            if len(cls._parsed) < cls._MAX:
                cls._parsed[pointer] = hit
        return hit

    def __init__(self, pointer: str) -> None:  # parsed in __new__
        pass


_OPERATIONS = jsonpatch.JsonPatch.operations


def apply_in_place(document: JSON, patch: Sequence[dict[str, Any]], where: str) -> JSON:
    """``document`` with ``patch`` applied; it may be changed in place, use the result.

    Each operation is built by the library's own operation classes (one at a time,
    so a failure names its index); an operation that does not apply raises
    ``Conflict`` naming its index, op and path.
    """
    for i, op in enumerate(patch):
        try:
            document = _OPERATIONS[op["op"]](op, pointer_cls=CachedPointer).apply(document)
        except (
            KeyError,
            jsonpatch.JsonPatchConflict,
            jsonpatch.JsonPatchTestFailed,
            jsonpatch.InvalidJsonPatch,
            jsonpointer.JsonPointerException,
            TypeError,
            ValueError,
        ) as exc:
            name = f"{where}[{i}]"
            raise Conflict(
                f"{name} ({op.get('op')} {op.get('path')!r}) does not apply: {exc}",
                errors=[FieldError(name, f"does not apply: {exc}")],
            ) from None
    return document


def diff(before: JSON, after: JSON) -> list[dict[str, Any]]:
    """An RFC 6902 patch that turns ``before`` into ``after`` (neither is changed).

    Values are compared as JSON text (msgspec), so 1, 1.0 and true differ. A patch
    that moves or copies (the library's list-reordering logic) is checked by
    applying it; if it does not reproduce ``after``, the whole document is replaced.
    """
    if canonical(before) == canonical(after):
        return []
    patch: list[dict[str, Any]] = jsonpatch.JsonPatch.from_diff(
        before, after, dumps=_json_text, pointer_cls=CachedPointer
    ).patch
    if not any(op.get("op") in ("move", "copy") for op in patch):
        return patch
    try:
        result = apply_in_place(copy(before), patch, "diff")
    except Conflict:
        result = _MISMATCH
    if result is _MISMATCH or canonical(result) != canonical(after):
        return [{"op": "replace", "path": "", "value": copy(after)}]
    return patch


_MISMATCH = object()


def summarise(patch: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """Paths a patch adds, removes and changes; a move removes its source and adds its target."""
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    for op in patch:
        kind, path = op.get("op"), str(op.get("path"))
        if kind == "add":
            added.append(path)
        elif kind == "remove":
            removed.append(path)
        elif kind == "replace":
            changed.append(path)
        elif kind == "move":
            removed.append(str(op.get("from")))
            added.append(path)
        elif kind == "copy":
            added.append(path)
    return added, removed, changed
