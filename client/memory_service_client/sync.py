"""Conflict policies of the replica, and the small SSE reader it follows the feed with.

A queued write goes out with ``If-Match: <the version it was based on>``. When
the server answers 412 it sends the entity as it is now, and the chosen policy
decides, without another read:

- ``server_wins``: the local edit is dropped; the server's entity stands.
- ``client_wins``: the edit is sent again with ``If-Match`` of the current version
  (a forced write: it overwrites whatever the server changed in those fields).
- ``merge``: a three-way merge against the version the edit started from. In
  ``metadata`` every key this client changed takes the local value and every
  other key keeps the server's; any other field this client changed is written
  only if the server left it as it was, otherwise the server's value stands.

A queued delete whose entity changed on the server is a conflict too: only
``client_wins`` deletes it. An edit to an entity the server deleted is dropped
under every policy (there is nothing to write it to). Every conflict is passed
to the replica's ``on_conflict`` callback, whatever the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Policy = Literal["server_wins", "client_wins", "merge"]
POLICIES: tuple[Policy, ...] = ("server_wins", "client_wins", "merge")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Conflict:
    """One write that met a newer server version, and what the policy made of it."""

    type: str
    id: str
    policy: Policy
    op: str  # the queued operation: "update" or "delete"
    local: dict[str, Any]  # the fields this client wrote
    server: dict[str, Any] | None  # the entity on the server (None: deleted there)
    outcome: str  # "kept_server", "forced", "merged", "deleted"
    result: dict[str, Any] | None = None  # the entity after resolution


@dataclass(frozen=True, slots=True)
class Decision:
    send: dict[str, Any] | None  # fields to write with If-Match of the server's version
    delete: bool = False
    outcome: str = "kept_server"


def decide(
    policy: Policy,
    op: str,
    fields: dict[str, Any],
    base: dict[str, Any] | None,
    server: dict[str, Any] | None,
) -> Decision:
    """What to do with a queued write that the server refused with 412 (or 404)."""
    if server is None:
        return Decision(None, outcome="kept_server")
    if op == "delete":
        if policy == "client_wins":
            return Decision(None, delete=True, outcome="deleted")
        return Decision(None, outcome="kept_server")
    if policy == "server_wins":
        return Decision(None)
    if policy == "client_wins":
        return Decision(dict(fields), outcome="forced")
    merged = merge_fields(base or {}, fields, server)
    return Decision(merged or None, outcome="merged")


def merge_fields(
    base: dict[str, Any], local: dict[str, Any], server: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in local.items():
        if name == "metadata" and isinstance(value, dict):
            metadata = merge_metadata(base.get("metadata") or {}, value, server.get(name) or {})
            if metadata != server.get(name):
                out[name] = metadata
        elif name == "secrets" or server.get(name) == base.get(name):
            out[name] = value  # the server left this field alone (secrets are write-only)
    return out


def merge_metadata(
    base: dict[str, Any], local: dict[str, Any], server: dict[str, Any]
) -> dict[str, Any]:
    """Keys this client changed (or removed) over the server's metadata."""
    merged = dict(server)
    for key in set(base) | set(local):
        mine = local.get(key, _MISSING)
        if mine is base.get(key, _MISSING) or mine == base.get(key, _MISSING):
            continue
        if mine is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = mine
    return merged


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each Server-Sent Event with data; comments are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield fields.get("id"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
