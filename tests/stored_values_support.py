"""What the tests of stored values share: the values, the media types, an import stream."""

from __future__ import annotations

import json
import uuid
from typing import Any

HUGE = int("7" * 400)
JSON_HEADERS = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def import_stream(header: dict[str, Any], metadata: Any, **extra: Any) -> bytes:
    """A ``/v1/import`` stream of one memory with this metadata."""
    memory = {
        "type": "memory", "id": str(uuid.uuid4()), "content": "imported",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "metadata": metadata, **extra,
    }  # fmt: skip
    end = {"type": "end", "counts": {"memory": 1}}
    return b"".join(json.dumps(x).encode() + b"\n" for x in (header, memory, end))
