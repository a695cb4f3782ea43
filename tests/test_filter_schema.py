"""The filter language's JSON Schema (``api.filter_schema``) and its parser agree.

Every filter below is judged twice: by the schema published in the OpenAPI
document and by ``compile_filter``, which the search and the listing use. The
two must give the same answer, and the parser's refusal must name the part.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from api.filter_schema import FILTER_COMPONENTS
from memory_service.errors import InvalidFilter
from memory_service.memories.filters import compile_filter

ACCEPTED: list[Any] = [
    {},
    {"metadata.topic": "food"},
    {"metadata.year": {"$gte": 2020}},
    {"metadata.a.b": {"$in": ["x", 1, None, True]}},
    {"metadata.tags": {"$contains": "x"}},
    {"metadata.flag": {"$exists": False}},
    {"metadata.n": {"$ne": None}},
    {"user_id": "u1", "importance": {"$gt": 0.5, "$lte": 1}},
    {"namespace": None},
    {"agent_id": {"$contains": "bot", "$nin": ["a", "b"]}},
    {"created_at": {"$gte": "2020-01-01T00:00:00Z"}},
    {"updated_at": {"$in": ["2020-01-01T00:00:00+02:00"]}},
    {"$and": [{"user_id": "u"}, {"$not": {"metadata.x": 1}}]},
    {"$or": [{"importance": 0.2}, {"metadata.s": {"$lt": "m"}}]},
    {"$not": {}},
]
REFUSED: list[tuple[Any, str]] = [
    ({"colour": "red"}, "unknown field"),
    ({"metadata.topic": {"$regex": "x"}}, "unknown operator"),
    ({"$nor": [{"user_id": "u"}]}, "unknown operator"),
    ({"$and": []}, "non-empty list"),
    ({"$or": {"user_id": "u"}}, "non-empty list"),
    ({"$not": [{"user_id": "u"}]}, "must be an object"),
    ({"user_id": 5}, "compares with strings"),
    ({"user_id": {}}, "must not be empty"),
    ({"importance": "high"}, "compares with numbers"),
    ({"importance": {"$contains": 1}}, "$contains applies"),
    ({"importance": {"$in": [0.1, None]}}, "compares with numbers"),
    ({"created_at": {"$gt": "yesterday"}}, "RFC 3339"),
    ({"created_at": {"$contains": "2020"}}, "$contains applies"),
    ({"metadata.a b": 1}, "metadata paths"),
    ({"metadata.": 1}, "metadata paths"),
    ({"metadata.x": [1, 2]}, "string, number or boolean"),
    ({"metadata.x": {"$gt": True}}, "not booleans"),
    ({"metadata.x": {"$gt": None}}, "not null"),
    ({"metadata.x": {"$exists": "yes"}}, "true or false"),
    ({"metadata.x": {"$in": "abc"}}, "list of values"),
    ({"metadata.x": {"$contains": None}}, "not null"),
    ({"metadata.x": {"$in": [{"a": 1}]}}, "string, number or boolean"),
]


@pytest.fixture(scope="module")
def validator() -> Any:
    # the components point at each other as #/components/schemas/..., from the root
    schema = {**FILTER_COMPONENTS["Filter"], "components": {"schemas": FILTER_COMPONENTS}}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


@pytest.mark.parametrize("spec", ACCEPTED)
def test_what_the_schema_accepts_the_parser_accepts(validator: Any, spec: Any) -> None:
    assert validator.is_valid(spec), [e.message for e in validator.iter_errors(spec)]
    compile_filter(spec)


@pytest.mark.parametrize(("spec", "named"), REFUSED)
def test_what_the_schema_refuses_the_parser_refuses(validator: Any, spec: Any, named: str) -> None:
    assert not validator.is_valid(spec), spec
    with pytest.raises(InvalidFilter) as refused:
        compile_filter(spec)
    assert named in refused.value.detail


async def test_the_filter_schema_is_in_the_served_document(client: Any) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert schemas["Filter"]["patternProperties"]
    assert schemas["SearchBody"]["properties"]["filter"]["anyOf"][0] == {
        "$ref": "#/components/schemas/Filter"
    }
    listing = next(p for p in doc["paths"]["/v1/memories"]["get"]["parameters"] if p["name"] == "filter")
    assert listing["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Filter"}
    severity = next(
        p for p in doc["paths"]["/v1/events"]["get"]["parameters"] if p["name"] == "min_severity"
    )
    assert {"debug", "info", "warn", "error"} <= set(severity["schema"]["enum"])


async def test_the_document_states_formats_bodies_and_answers(client: Any) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    paths = doc["paths"]

    def parameter(path: str, method: str, name: str) -> dict[str, Any]:
        found = next(p for p in paths[path][method]["parameters"] if p["name"] == name)
        return dict(found["schema"])

    assert "[0-9a-fA-F]{8}" in parameter("/v1/memories/{memory_id}", "get", "memory_id")["pattern"]
    assert "{22}" in str(parameter("/v1/memories", "get", "cursor"))
    assert "[0-9]{1,10}" in str(parameter("/v1/memories/{memory_id}", "patch", "If-Match"))
    body = paths["/v1/memories/import"]["post"]["requestBody"]
    assert body["required"] and "application/x-ndjson" in body["content"]
    assert "application/x-ndjson" in paths["/v1/import"]["post"]["requestBody"]["content"]
    assert {"200", "204"} <= set(paths["/v1/workers/claim"]["post"]["responses"])
    assert "201" not in paths["/v1/workers/claim"]["post"]["responses"]
    assert {"200", "202"} <= set(paths["/v1/migrations/browser-storage"]["post"]["responses"])
    search = doc["components"]["schemas"]["SearchBody"]
    assert search["properties"]["embedding"]["anyOf"][0]["minItems"] == 384
