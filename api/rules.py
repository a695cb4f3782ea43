"""The value rules of the HTTP API as JSON Schema fragments, next to the checks they state.

Each pattern here is built from the check the service runs (the compiled regex or
the parsing function's rule), so the OpenAPI document (``api.contract``) says
what the service refuses with a 422. Patterns use the syntax Python's ``re``,
ECMA-262 and Rust's ``regex`` share, and every one excludes NUL, which the
service refuses in any string.
"""

from __future__ import annotations

from typing import Any

from api.filter_schema import FILTER_REF, METADATA_PATH, SAFE_NUMBER
from api.search_rules import rerankers, search_rules
from memory_service.changes.feed import TYPE_NAMES as CHANGE_TYPES
from memory_service.config import Settings
from memory_service.events.models import MAX_TYPE_FILTERS, SEVERITIES
from memory_service.executions.validation import MAX_SEQ
from memory_service.infra.pagination import MAX_CURSOR_LENGTH
from memory_service.memories.models import SCOPE_FIELDS
from memory_service.memories.validation import FLOAT32_LIMIT
from memory_service.transfer.exporter import EXPORT_ORDER
from memory_service.workflows.definitions import KINDS, MAX_STEPS
from memory_service.workflows.workers import (
    MAX_CLAIM,
    MAX_LEASE_S,
    MAX_QUEUES,
    MAX_WAIT_S,
    MIN_LEASE_S,
)

OBJECT_RULE = "$object"  # a rule under this property name applies to the object itself
REPLACE = "$replace"  # a rule under this key replaces the property's schema whole
NO_NUL = r"^[^\x00]*$"
JSON_REF = "#/components/schemas/JsonValue"
# any JSON value without NUL, in a string or a key, and no integer a double cannot hold
# exactly: what a free-form field (metadata, a step's input) may hold. One schema of
# keywords that each apply to one type, not an anyOf of types, so that a test generator
# that breaks one member to make an invalid value cannot land in another member
JSON_VALUE = {
    "type": ["string", "number", "boolean", "null", "array", "object"],
    "pattern": NO_NUL,
    "not": SAFE_NUMBER["not"],
    "items": {"$ref": JSON_REF},
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": {"$ref": JSON_REF},
}
# one RFC 6902 operation as ``executions.states.check_patch`` accepts it; whether it
# applies to the state is the state's question (409), not the shape's
_PATH = {"type": "string", "pattern": NO_NUL}
PATCH_OPERATION = {
    "anyOf": [
        {
            "type": "object",
            "required": ["op", "path", "value"],
            "properties": {
                "op": {"enum": ["add", "replace", "test"]}, "path": _PATH, "value": {"$ref": JSON_REF}
            },
            "additionalProperties": {"$ref": JSON_REF},
        },
        {
            "type": "object",
            "required": ["op", "path"],
            "properties": {"op": {"const": "remove"}, "path": _PATH},
            "additionalProperties": {"$ref": JSON_REF},
        },
        {
            "type": "object",
            "required": ["op", "path", "from"],
            "properties": {"op": {"enum": ["move", "copy"]}, "path": _PATH, "from": _PATH},
            "additionalProperties": {"$ref": JSON_REF},
        },
    ]
}
STATE_PATCH = {REPLACE: {"anyOf": [{"type": "array", "items": PATCH_OPERATION}, {"type": "null"}]}}
# a step gives its whole state or a patch against the previous one, not both (a
# null state_patch is no patch; a null state is the state null)
STATE_OR_PATCH = {"not": {"required": ["state", "state_patch"], "properties": {"state_patch": {"type": "array"}}}}
EXPORT_TYPES = ("memories", "tasks", "environments", "executions", "events")
# the characters ``str.strip()`` removes (``str.isspace``), what the service's checks read
# as blank; spelled out, since the ``\s`` of Python, ECMA-262 and Rust differ
STRIPPED = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[^\x00]*[^{STRIPPED}\x00][^\x00]*$"
UUID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# base64url of the position, a dot, base64url of a 16-byte signature (empty: the first page)
CURSOR = rf"^$|^[A-Za-z0-9_-]{{1,{MAX_CURSOR_LENGTH - 23}}}\.[A-Za-z0-9_-]{{22}}$"
# a version number, optionally quoted as an entity tag, optionally weak
IF_MATCH = r'^(W/)?"?[0-9]{1,10}"?$'
SEQ_TEXT = r"^\s*[0-9]{1,9}\s*$"
LABEL = r"^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$"
STEP_KIND = r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$"
EVENT_TYPE = r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$"
WINDOW = r"^([1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s$|^([1-9]|[1-5][0-9]|60)m$|^1h$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
WORKFLOW_NAME = r"^[A-Za-z0-9_.-]{1,128}$"
# what a search may group by (``retrieval.grouping.parse_group_by``)
GROUP_PATH = rf"^({'|'.join(SCOPE_FIELDS)})$|{METADATA_PATH}"
# the largest magnitude that float32 rounds to a finite number, and the smallest that
# it does not round to zero
FLOAT32_TINY = 7.006492321624085e-46


def comma_list(*words: str) -> str:
    """A comma-separated list of ``words`` (blanks around items and empty items allowed)."""
    word = "(" + "|".join(words) + ")"
    item = rf"\s*({word}\s*)?"
    return rf"^{item}(,{item})*$"


def named_list(*words: str) -> str:
    """``comma_list`` that names at least one of ``words``."""
    word = "(" + "|".join(words) + ")"
    item = rf"\s*({word}\s*)?"
    return rf"^({item},)*\s*{word}\s*(,{item})*$"


def seq_or_ref() -> dict[str, Any]:
    """A step reference in a body: a seq, or the text forms of ``step_ref``."""
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_SEQ}, *step_ref()]}


def uuid_schema() -> dict[str, Any]:
    # no ``format: uuid``: the service also takes the 32 digits without hyphens
    return {"type": "string", "pattern": UUID}


def step_ref(max_seq: int = MAX_SEQ) -> list[dict[str, Any]]:
    """A step reference as text: a seq, a checkpoint label or an RFC 3339 time."""
    return [
        {"type": "string", "pattern": SEQ_TEXT},
        {"type": "string", "pattern": LABEL},
        {"type": "string", "format": "date-time"},
    ]


def embedding(dimension: int) -> dict[str, Any]:
    """``dimension`` numbers that are finite as float32, not all of them zero there."""
    return {
        "type": "array",
        "minItems": dimension,
        "maxItems": dimension,
        "items": {
            "type": "number",
            "exclusiveMinimum": -FLOAT32_LIMIT,
            "exclusiveMaximum": FLOAT32_LIMIT,
        },
        "contains": {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": FLOAT32_TINY},
                {"type": "number", "exclusiveMaximum": -FLOAT32_TINY},
            ]
        },
    }


PARAMETER_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("query", "cursor"): {"pattern": CURSOR},
    ("header", "If-Match"): {"pattern": IF_MATCH},
    **{("path", name): uuid_schema() for name in (
        "memory_id", "task_id", "environment_id", "execution_id", "run_id", "attempt_id",
        "migration_id", "tenant_id",
    )},
    ("path", "key_prefix"): {"pattern": r"^[0-9a-f]{12}$"},
    ("query", "environment_id"): uuid_schema(),
    ("query", "type"): {"items": {"type": "string", "pattern": EVENT_TYPE, "maxLength": 128}},
    ("query", "window"): {"pattern": WINDOW},
    ("query", "min_severity"): {"enum": [*SEVERITIES, None]},
}
PATH_PARAMETER_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/memories/{memory_id}", "include"): {"pattern": comma_list("embedding")},
    ("/v1/memories/by-key/{namespace}/{key}", "include"): {"enum": ["embedding"]},
    **{(path, "include"): {"pattern": comma_list("embedding")} for path in (
        "/v1/changes", "/v1/changes/snapshot", "/v1/changes/stream",
    )},
    ("/v1/executions/{execution_id}/steps/{seq}", "include"): {
        "pattern": comma_list("state", "patch")
    },
    **{("/v1/memories", name): {"minLength": 1} for name in ("user_id", "agent_id", "run_id", "namespace")},
    ("/v1/tasks", "agent_id"): {"pattern": NOT_BLANK},
    ("/v1/tasks", "tag"): {"items": {"type": "string", "pattern": NOT_BLANK}},
    ("/v1/executions/{execution_id}/diff", "from_execution"): uuid_schema(),
    # a header value cannot start with a space (HTTP trims them); a query value may
    ("/v1/events/stream", "Last-Event-ID"): {"pattern": r"^[0-9]{1,18}[ \t]*$"},
    **{(path, "type"): {**PARAMETER_RULES[("query", "type")], "maxItems": MAX_TYPE_FILTERS}
       for path in ("/v1/events", "/v1/events/stream")},
    ("/v1/executions", "agent_id"): {"pattern": NOT_BLANK},
    ("/v1/events/stream", "last_event_id"): {"pattern": r"^\s*[0-9]{1,18}\s*$"},
    ("/v1/changes/stream", "Last-Event-ID"): {"pattern": CURSOR},
    ("/v1/changes", "since"): {"pattern": CURSOR},
    ("/v1/changes/stream", "since"): {"pattern": CURSOR},
    **{(path, "types"): {"items": {"type": "string", "pattern": named_list(*CHANGE_TYPES)}}
       for path in ("/v1/changes", "/v1/changes/snapshot", "/v1/changes/stream")},
    ("/v1/export", "types"): {"pattern": named_list(*EXPORT_TYPES, *EXPORT_ORDER)},
    ("/v1/workflows/{name}/versions/{version}", "version"): {"minimum": 1, "maximum": MAX_SEQ},
    ("/v1/executions/{execution_id}/steps/{seq}", "seq"): {"minimum": 0, "maximum": MAX_SEQ},
    ("/v1/workflow-runs/{run_id}/signals/{name}", "name"): {"pattern": WORKFLOW_NAME},
    ("/v1/workflow-runs", "workflow"): {"pattern": WORKFLOW_NAME},
    ("/v1/executions", "task_id"): uuid_schema(),
    ("/v1/executions", "parent_id"): uuid_schema(),
    ("/v1/workflows/{name}", "name"): {"pattern": WORKFLOW_NAME},
    ("/v1/workflows/{name}/versions/{version}", "name"): {"pattern": WORKFLOW_NAME},
    ("/v1/workflows/{name}/runs", "name"): {"pattern": WORKFLOW_NAME},
    ("/v1/executions/{execution_id}/diff", "from"): {"required": True, "anyOf": step_ref()},
    ("/v1/executions/{execution_id}/diff", "to"): {"anyOf": step_ref()},
    ("/v1/executions/{execution_id}/replay", "from"): {"anyOf": step_ref()},
    ("/v1/executions/{execution_id}/replay", "to"): {"anyOf": step_ref()},
    ("/v1/executions/{execution_id}/replay", "Last-Event-ID"): {"pattern": r"^[0-9]{1,9}[ \t]*$"},
    ("/v1/executions/{execution_id}/replay", "last_event_id"): {"pattern": SEQ_TEXT},
    ("/v1/executions/{execution_id}/state", "at"): {"anyOf": step_ref()},
    ("/v1/memories", "filter"): {
        "content": {"application/json": {"schema": {"$ref": FILTER_REF}}}
    },
}


def workflow_definition() -> dict[str, Any]:
    """The shape of a workflow definition (``workflows.definitions.parse_definition``);
    its rules across steps are in docs/workflows.md."""
    step = {
        "type": "object",
        "required": ["id", "kind"],
        "properties": {
            "id": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
            "kind": {"enum": list(KINDS)},
            "depends_on": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "type": "object",
        "required": ["steps"],
        "additionalProperties": False,
        "properties": {
            "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": step},
            "description": {"type": ["string", "null"], "maxLength": 2000},
        },
    }


# bodies that may be a bare list (of events, of steps): not an empty one
NON_EMPTY_LISTS = {("/v1/events", "post"), ("/v1/executions/{execution_id}/steps", "post")}
BODY_RULES = {("/v1/workflows/{name}", "put"): workflow_definition}


def property_rules(settings: Settings, dimension: int) -> dict[tuple[str, str], dict[str, Any]]:
    """(component, property) -> the rule the service checks beyond the field's type."""
    text = {"pattern": NOT_BLANK}
    claim_rules: dict[str, dict[str, Any]] = {
        "worker_id": {**text, "maxLength": 256},
        "queues": {
            "minItems": 1,
            "maxItems": MAX_QUEUES,
            "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"},
        },
        "max_steps": {"minimum": 1, "maximum": MAX_CLAIM},
        "lease_s": {"minimum": MIN_LEASE_S, "maximum": MAX_LEASE_S},
        "wait_s": {"minimum": 0, "maximum": MAX_WAIT_S},
    }
    rules: dict[tuple[str, str], dict[str, Any]] = {
        ("TenantCreate", "name"): {**text, "maxLength": 200},
        ("MemoryCreate", "content"): text,
        ("MemoryCreate", "embedding"): embedding(dimension),
        ("MemoryUpdate", "content"): text,
        ("KeyedMemoryPut", "content"): text,
        ("SearchBody", "embedding"): embedding(dimension),
        ("SearchBody", "query"): text,
        ("SearchBody", "half_life_hours"): {"minimum": 1e-6},
        ("SearchBody", "group_by"): {"pattern": GROUP_PATH},
        ("SearchBody", "context_by"): {"pattern": GROUP_PATH},
        ("SearchBody", OBJECT_RULE): search_rules(),
        ("SearchBody", "rerank"): {"enum": rerankers(settings)},
        ("SearchBody", "filter"): {REPLACE: {"anyOf": [{"$ref": FILTER_REF}, {"type": "null"}]}},
        ("CheckpointIn", "label"): {"pattern": LABEL},
        ("MemoryUpdate", OBJECT_RULE): {"minProperties": 1},
        ("StepsIn", "steps"): {"minItems": 1},
        # one step (its kind at the top level) or a batch under steps, not both
        ("StepsIn", OBJECT_RULE): {
            "oneOf": [
                {"required": ["kind"], "not": {"required": ["steps"]}},
                {"required": ["steps"], "not": {"required": ["kind"]}},
            ],
            **STATE_OR_PATCH,
        },
        ("RunCreate", "version"): {"minimum": 1, "maximum": MAX_SEQ},
        ("RollbackIn", "to"): {REPLACE: seq_or_ref()},
        ("execution_schemas_ForkIn", "at"): {REPLACE: seq_or_ref()},
        ("CheckpointIn", "seq"): {"minimum": 1, "maximum": MAX_SEQ},
        ("ExecutionCreate", "task_id"): uuid_schema(),
        ("ExecutionCreate", "environment_id"): uuid_schema(),
        # a claim, and the claim that may ride on a completion, follow the same rules
        **{(claim, field): rule for claim in ("ClaimIn", "ClaimNextIn") for field, rule in claim_rules.items()},
        ("HeartbeatIn", "lease_s"): {"minimum": MIN_LEASE_S, "maximum": MAX_LEASE_S},
        ("FailIn", "error"): text,
        ("MemoryCreate", "context"): text,
        ("EventBatch", "items"): {"minItems": 1},
        ("EventBatch", "events"): {"minItems": 1},
        ("EventBatch", OBJECT_RULE): {
            "oneOf": [
                {"required": ["items"], "properties": {"items": {"type": "array"}}},
                {"required": ["events"], "properties": {"events": {"type": "array"}}},
            ]
        },
        ("MemoryBatchCreate", "items"): {"minItems": 1, "maxItems": settings.max_batch_items},
        ("ExecutionUpdate", OBJECT_RULE): {"minProperties": 1},
        ("TaskUpdate", OBJECT_RULE): {"minProperties": 1},
        ("EnvironmentUpdate", OBJECT_RULE): {"minProperties": 1},
        ("TaskCreate", "environment_id"): uuid_schema(),
        ("TaskUpdate", "environment_id"): uuid_schema(),
        ("TaskCreate", "tags"): {"items": {"type": "string", "pattern": NOT_BLANK}},
        ("TaskUpdate", "tags"): {"items": {"type": "string", "pattern": NOT_BLANK}},
        ("EnvironmentCreate", "secrets"): {"propertyNames": {"pattern": SECRET_NAME}},
        ("EnvironmentUpdate", "secrets"): {"propertyNames": {"pattern": SECRET_NAME}},
        ("EventIn", "duration_ms"): {"minimum": 0},
        ("EnvironmentCreate", "name"): text,
        ("EnvironmentUpdate", "name"): text,
        ("TaskCreate", "title"): text,
        ("TaskUpdate", "title"): text,
        ("StepIn", "kind"): {"pattern": STEP_KIND},
        ("StepIn", "state_patch"): STATE_PATCH,
        # free-form JSON: no NUL in a string or a key, like every stored value
        **{(struct, name): {REPLACE: {"$ref": JSON_REF}} for struct in ("StepIn", "StepsIn")
           for name in ("input", "output", "error")},
        ("StepsIn", "state_patch"): STATE_PATCH,
        ("execution_schemas_ForkIn", "state_patch"): STATE_PATCH,
        ("StepIn", OBJECT_RULE): STATE_OR_PATCH,
        **{("EventIn", name): {"minLength": 1} for name in (
            "source", "trace_id", "span_id", "task_id", "execution_id", "agent_id"
        )},
        ("StepsIn", "kind"): {"pattern": STEP_KIND},
        ("EventIn", "type"): {"pattern": EVENT_TYPE, "maxLength": 128},
    }
    return rules
