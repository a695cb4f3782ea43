"""The export format: one JSON object per line, each tagged with its ``type``.

A stream is a ``header`` line (format name and version, service version,
embedding model name and dimension, time), then entity lines (``environment``,
``task``, ``memory``, ``execution``, ``event``), then an ``end`` line with the
count of each type. The end line is what proves a stream complete: an import
that does not see it, or sees other counts, writes nothing. Embeddings travel as
base64 of little-endian float32, exact to the bit (identical ranking after a
round trip) and a fifth of the size of a JSON list of numbers; a JSON list is
accepted on import too. Decoding goes through msgspec tagged unions, so an
unknown ``type`` or a wrongly typed field is an error naming the field.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

FORMAT = "memory-service-export"
FORMAT_VERSION = 1
ENTITY_TYPES = ("environment", "task", "memory", "execution", "event")
EMBEDDING_ENCODING = "base64-float32-le"


class Model(msgspec.Struct):
    name: str
    dimension: int


class Header(msgspec.Struct, tag="header", tag_field="type"):
    format: str
    format_version: int
    service_version: str
    model: Model
    exported_at: datetime
    types: list[str]
    embedding_encoding: str = EMBEDDING_ENCODING


class HistoryLine(msgspec.Struct):
    event: str
    old_content: str | None
    new_content: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    at: datetime
    version: int


class MemoryLine(msgspec.Struct, tag="memory", tag_field="type"):
    id: str
    content: str
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    namespace: str | None = None
    metadata: dict[str, Any] = {}
    importance: float = 0.5
    context: str | None = None
    expires_at: datetime | None = None
    version: int = 1
    embedding: str | list[float] | None = None
    history: list[HistoryLine] | None = None


class TaskLine(msgspec.Struct, tag="task", tag_field="type"):
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    status: str = "pending"
    priority: str = "medium"
    environment_id: str | None = None
    agent_id: str | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    completed_at: datetime | None = None
    version: int = 1


class EnvironmentLine(msgspec.Struct, tag="environment", tag_field="type"):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    config: dict[str, Any] = {}
    is_active: bool = True
    version: int = 1
    secret_names: list[str] = []
    # present only in an export made with the admin token and include_secret_values
    secrets: dict[str, str] | None = None


NULL = msgspec.Raw(b"null")


class StepLine(msgspec.Struct):
    seq: int
    kind: str
    started_at: datetime
    ended_at: datetime
    recorded_at: datetime
    state_size: int
    changed_paths: int
    name: str | None = None
    input: Any = None
    output: Any = None
    error: Any = None
    metadata: dict[str, Any] = {}
    parent_seq: int | None = None
    # exactly one of the two is not null: the full state (a keyframe) or an RFC 6902
    # patch, carried as the JSON text stored (msgspec.Raw: never decoded on the way)
    state: msgspec.Raw = NULL
    state_patch: msgspec.Raw = NULL


class CheckpointLine(msgspec.Struct):
    label: str
    seq: int
    created_at: datetime
    note: str | None = None


class ExecutionLine(msgspec.Struct, tag="execution", tag_field="type"):
    id: str
    status: str
    created_at: datetime
    updated_at: datetime
    task_id: str | None = None
    environment_id: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] = {}
    parent_id: str | None = None
    fork_seq: int | None = None
    head_seq: int = 0
    keyframe_seq: int = 0
    ended_at: datetime | None = None
    version: int = 1
    steps: list[StepLine] = []
    checkpoints: list[CheckpointLine] = []


class EventLine(msgspec.Struct, tag="event", tag_field="type"):
    type_name: str = msgspec.field(name="event_type")
    severity: str = "info"
    ts: datetime | None = None
    source: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    task_id: str | None = None
    execution_id: str | None = None
    agent_id: str | None = None
    duration_ms: float | None = None
    attributes: dict[str, Any] = {}
    # the event's id, so that an import can tell an event it already holds; absent
    # from exports written before events carried it (those events cannot be matched)
    id: uuid.UUID | None = None


class End(msgspec.Struct, tag="end", tag_field="type"):
    counts: dict[str, int]


Line = Header | MemoryLine | TaskLine | EnvironmentLine | ExecutionLine | EventLine | End
_decoder = msgspec.json.Decoder(Line)
_encoder = msgspec.json.Encoder()


class LineError(ValueError):
    """A line that is not valid JSON of a known type; the message names the field."""


def decode_line(raw: bytes) -> Line:
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise LineError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise LineError(f"not valid JSON: {exc}") from None


def encode_line(line: msgspec.Struct) -> bytes:
    return _encoder.encode(line) + b"\n"


def encode_embedding(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_embedding(value: str | list[float], dimension: int) -> np.ndarray:
    """The vector of a memory line; ``LineError`` if it has the wrong size or is not finite."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise LineError("embedding is not valid base64") from None
        if len(raw) != 4 * dimension:
            raise LineError(f"embedding has {len(raw) // 4} dimensions, not {dimension}")
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        if len(value) != dimension:
            raise LineError(f"embedding has {len(value)} dimensions, not {dimension}")
        vector = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise LineError("embedding holds NaN, Inf or only zeros")
    return vector
