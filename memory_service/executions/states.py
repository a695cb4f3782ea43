"""State arithmetic on JSON documents: apply, make and summarise RFC 6902 patches.

Everything here is pure and synchronous; ``jsonpatch`` does the patching. Two
things the library leaves to its caller are settled here. First, a failing
operation is reported by its index and path (``Conflict``), and a malformed one
as ``InvalidInput``. Second, ``make_patch`` compares values with Python's ``==``,
for which ``1 == 1.0 == True``; ``diff`` therefore checks that its patch really
turns one document into the other, compared as canonical JSON bytes, and falls
back to replacing the whole document when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
        if not isinstance(op, dict) or op.get("op") not in _OPS:
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


def apply_in_place(document: JSON, patch: Sequence[dict[str, Any]], where: str) -> JSON:
    """``document`` with ``patch`` applied; it may be changed in place, use the result.

    An operation that does not apply raises ``Conflict`` naming its index, op and path.
    """
    for i, op in enumerate(patch):
        try:
            document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        except (
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
    """An RFC 6902 patch that turns ``before`` into ``after`` (neither is changed)."""
    if canonical(before) == canonical(after):
        return []
    patch: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    try:
        result = jsonpatch.apply_patch(copy(before), patch, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
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
