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

``context_by`` (same values) keeps single memories but lets a group lend its weight:
each memory gains ``context_weight`` times the scores of the best other members of
its group in the pool, and as much again of the best score of its neighbours there
(members written up to ``CONTEXT_NEIGHBOURS`` writes before or after it: the turns
around a turn of a conversation) (``add_context``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from memory_service.errors import FieldError, InvalidInput
from memory_service.memories.filters import MAX_PATH_SEGMENTS, PATH_SEGMENT
from memory_service.memories.models import SCOPE_FIELDS, Memory, SearchGroup, SearchHit

DEFAULT_GROUP_SIZE = 3
MAX_GROUP_SIZE = 100
# weight of a group's further members next to its best one (chosen on LoCoMo sessions)
GROUP_DAMPING = 0.5
# context_by: how many of a group's best members lend a share, and its default weight
CONTEXT_MEMBERS = 3
DEFAULT_CONTEXT_WEIGHT = 0.2  # chosen on LoCoMo conversations 0-4, sessions as groups
CONTEXT_NEIGHBOURS = 2  # writes either side (by seq) whose best score a member gains too


@dataclass(frozen=True, slots=True)
class GroupBy:
    path: tuple[str, ...]  # ("run_id",) or ("metadata", "session", ...)
    size: int = DEFAULT_GROUP_SIZE

    @property
    def name(self) -> str:
        return ".".join(self.path)


def parse_group_by(value: Any, where: str = "group_by") -> tuple[str, ...]:
    """The path of a ``group_by`` (or ``context_by``) value, or a 422 naming the problem."""
    if not isinstance(value, str):
        raise InvalidInput("group_by must be a string", errors=[FieldError(where, "string")])
    if value in SCOPE_FIELDS:
        return (value,)
    if value.startswith("metadata."):
        segments = value.split(".")[1:]
        if len(segments) <= MAX_PATH_SEGMENTS and all(PATH_SEGMENT.match(s) for s in segments):
            return ("metadata", *segments)
        raise InvalidInput(
            f"{where}: metadata paths are up to 8 dot-separated keys without spaces",
            errors=[FieldError(where, "metadata.<key> path")],
        )
    raise InvalidInput(
        f"{where}: cannot group by {value[:64]!r}; expected one of {', '.join(SCOPE_FIELDS)} "
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


def add_context(hits: list[SearchHit], path: tuple[str, ...], weight: float) -> list[SearchHit]:
    """Add to each hit ``weight`` times the scores of the best other members of its group.

    A group's best ``CONTEXT_MEMBERS`` hits in the pool count; a hit outside them gets
    all of theirs, one inside them the others'. A hit also gets ``weight`` times the
    best score of a member of its group in the pool written at most
    ``CONTEXT_NEIGHBOURS`` writes before or after it (by ``seq``): a turn whose
    neighbouring turns match is likely part of the answer. So a memory whose
    conversation holds other good matches rises, the more so when they are around it,
    while results stay single memories. A memory without the value gets nothing. The
    share shows as the ``context`` component; re-sorted.
    """
    if path[0] == "metadata":
        keys = [_identity(group_key(hit.memory, path)) for hit in hits]
    else:  # a scope field: a string or None, its own identity
        keys = [getattr(hit.memory, path[0]) for hit in hits]
    best: dict[Any, list[tuple[SearchHit, float]]] = {}  # group -> its first hits, scores
    placed: dict[tuple[Any, int], float] = {}  # (group, seq) -> score
    for hit, identity in zip(hits, keys, strict=True):
        if identity is not None:
            placed[(identity, hit.memory.seq)] = hit.score
            members = best.setdefault(identity, [])
            if len(members) < CONTEXT_MEMBERS:
                members.append((hit, hit.score))
    if not placed:
        return hits  # no candidate has the value: nothing to lend, the order stands
    around = [d for d in range(-CONTEXT_NEIGHBOURS, CONTEXT_NEIGHBOURS + 1) if d]
    near = placed.get  # scores as they were before any share (as are the members')
    for hit, identity in zip(hits, keys, strict=True):
        if identity is None:
            continue
        seq = hit.memory.seq
        others = [score for o, score in best[identity] if o is not hit]
        share = weight * (sum(others) + max([near((identity, seq + d), 0.0) for d in around]))
        if share > 0.0:
            parts = hit.components or {"relevance": hit.score}
            hit.components = {**parts, "context": share}
            hit.score += share
    return sorted(hits, key=lambda h: (-h.score, h.memory.seq))


def _identity(key: Any) -> Any:
    """What tells groups apart: a string value (a run id) itself; any other value its
    JSON text in a tuple (never equal to a string), so 1, 1.0 and true stay apart."""
    if key is None or isinstance(key, str):
        return key
    return (json.dumps(key, sort_keys=True),)


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
