"""The rules of a search body across its fields, as JSON Schema (``api.rules`` puts them
on ``SearchBody``). Each is built from the check it states: ``MemoryValidator.check_search``,
``retrieval.options.parse_options`` and the search service's own (a cross-encoder needs
the query text; the ``as_of`` search is vector only).

Three more rules across fields are checked by the service and said in the fields'
descriptions but not stated here: ``context_weight`` needs ``context_by``, ``diversity``
does not combine with ``group_by``, and ``rrf_k`` does not combine with ``fusion:
"scores"``. Each alone is a two-branch ``anyOf`` like the ones below, but the branches
multiply across the body's rules and one more makes the body's schema too large for
schemathesis to generate from (``docs/api-contract.md``).
"""

from __future__ import annotations

from typing import Any

from api.search_schemas import RETRIEVAL_OPTIONS
from memory_service.config import Settings
from memory_service.retrieval.options import HYBRID_ONLY, LOGIT_RERANKERS, RERANKERS, SCORE_SCALED

# what ``raw.get(name)`` reads as unset: the option is absent, null, 0 or empty
FALSY = {"enum": [None, 0, "", False]}


def rerankers(settings: Settings) -> list[str]:
    """The re-rankers this service runs: ``cross`` only with a configured model."""
    return [r for r in RERANKERS if r != "cross" or settings.cross_encoder_path]


def nulls(*names: str) -> dict[str, Any]:
    """Each of ``names`` absent or null."""
    return {"properties": {name: {"type": "null"} for name in names}}


def search_rules() -> dict[str, Any]:
    """The rules of a search body across its fields (``MemoryValidator.check_search``,
    ``retrieval.options.parse_options``, the ``as_of`` search). The sum of the two
    re-ranking weights is at most 1: stated as each at most 0.5 when both are given."""
    return {
        "allOf": [
            {
                "oneOf": [
                    {"required": ["query"], "properties": {"query": {"type": "string"}}},
                    {"required": ["embedding"], "properties": {"embedding": {"type": "array"}}},
                ]
            },
            {
                "anyOf": [
                    {"required": ["mode"], "properties": {"mode": {"const": "hybrid"}}},
                    nulls(*HYBRID_ONLY),
                ]
            },
            # a group size only with groups
            {"anyOf": [nulls("group_size"), {"required": ["group_by"], "properties": {"group_by": {"type": "string"}}}]},
            # a mode with a keyword side needs the query text (no mode: vector for an
            # embedding alone)
            {
                "anyOf": [
                    {"properties": {"mode": {"enum": ["vector", None]}}},
                    {"required": ["query"], "properties": {"query": {"type": "string"}}},
                ]
            },
            {
                "anyOf": [
                    nulls("as_of"),
                    {
                        "allOf": [
                            {"properties": {"mode": {"const": "vector"}}},
                            {"properties": {"explain": {"const": False}}},
                            nulls(*RETRIEVAL_OPTIONS),
                        ]
                    },
                ]
            },
            {
                "anyOf": [
                    nulls("recency_weight"),
                    nulls("importance_weight"),
                    {"properties": {"recency_weight": {"maximum": 0.5}, "importance_weight": {"maximum": 0.5}}},
                ]
            },
            {
                "anyOf": [
                    nulls("vector_weight"),
                    nulls("keyword_weight"),
                    {"properties": {"vector_weight": {"exclusiveMinimum": 0}}},
                    {"properties": {"keyword_weight": {"exclusiveMinimum": 0}}},
                ]
            },
            # the cross-encoder's score is a logit: options that weigh scores as shares do not combine
            {
                "anyOf": [
                    {"properties": {"rerank": {"not": {"enum": list(LOGIT_RERANKERS)}}}},
                    {"properties": {name: FALSY for name in SCORE_SCALED}},
                ]
            },
            # the cross-encoder reads the query text
            {
                "anyOf": [
                    {"properties": {"rerank": {"not": {"const": "cross"}}}},
                    {"required": ["query"], "properties": {"query": {"type": "string"}}},
                ]
            },
        ]
    }


