"""Grouped search: memories that belong together (a conversation) ranked as units.

``group_by`` names what makes a group: a scope field (``run_id``, ``user_id``,
``agent_id``, ``namespace``) or a metadata path (``metadata.session``,
``metadata.a.b``). The ranked pool is split into groups by that value; a memory
without it is a group of its own, with key ``null``. A group keeps its best
``group_size`` memories, best first, and is scored by them all:

    group score = s_1 + damping * (s_2 + ... + s_m)

where ``s_1 >= s_2 >= ...`` are the scores of its kept memories, so a group
holding several good matches outranks one holding a single match of about the
same strength, while one strong match still counts most. The top ``k`` groups
are returned, by group score, ties by their best memory's rank.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from memory_service.errors import FieldError, InvalidInput
from memory_service.memories.models import SCOPE_FIELDS, Memory, SearchGroup, SearchHit

MAX_PATH_SEGMENTS = 8
_SEGMENT = re.compile(r"^[^.\s]{1,128}$")
DEFAULT_GROUP_SIZE = 3
MAX_GROUP_SIZE = 100
# weight of a group's further members next to its best one (chosen on LoCoMo sessions)
GROUP_DAMPING = 0.5


@dataclass(frozen=True, slots=True)
class GroupBy:
    path: tuple[str, ...]  # ("run_id",) or ("metadata", "session", ...)
    size: int = DEFAULT_GROUP_SIZE

    @property
    def name(self) -> str:
        return ".".join(self.path)


def parse_group_by(value: Any) -> tuple[str, ...]:
    """The path of a ``group_by`` value, or a 422 naming what is wrong with it."""
    where = "group_by"
    if not isinstance(value, str):
        raise InvalidInput("group_by must be a string", errors=[FieldError(where, "string")])
    if value in SCOPE_FIELDS:
        return (value,)
    if value.startswith("metadata."):
        segments = value.split(".")[1:]
        if len(segments) <= MAX_PATH_SEGMENTS and all(_SEGMENT.match(s) for s in segments):
            return ("metadata", *segments)
        raise InvalidInput(
            "group_by: metadata paths are up to 8 dot-separated keys without spaces",
            errors=[FieldError(where, "metadata.<key> path")],
        )
    raise InvalidInput(
        f"cannot group by {value[:64]!r}; expected one of {', '.join(SCOPE_FIELDS)} "
        "or metadata.<key>",
        errors=[FieldError(where, "a scope field or metadata.<key>")],
    )


def group_key(memory: Memory, path: tuple[str, ...]) -> Any:
    """The memory's value at ``path``; None when it has none."""
    if path[0] != "metadata":
        return getattr(memory, path[0])
    value: Any = memory.metadata
    for segment in path[1:]:
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def group_hits(
    hits: list[SearchHit], group_by: GroupBy, k: int, damping: float = GROUP_DAMPING
) -> list[SearchGroup]:
    """The top ``k`` groups of ``hits`` (ranked best first), each with its best members."""
    groups: dict[str, SearchGroup] = {}
    order: list[SearchGroup] = []
    for hit in hits:
        key = group_key(hit.memory, group_by.path)
        identity = f"memory:{hit.memory.id}" if key is None else json.dumps(key, sort_keys=True)
        group = groups.get(identity)
        if group is None:
            group = groups[identity] = SearchGroup(key, 0.0, [])
            order.append(group)
        if len(group.hits) < group_by.size:
            group.hits.append(hit)
    for group in order:
        scores = sorted((h.score for h in group.hits), reverse=True)
        group.score = scores[0] + damping * sum(scores[1:])
        group.hits.sort(key=lambda h: -h.score)
    rank = {id(g): i for i, g in enumerate(order)}
    return sorted(order, key=lambda g: (-g.score, rank[id(g)]))[:k]
