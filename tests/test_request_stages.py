"""Per-stage request timing in ``/metrics``: where a request's time went."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]


def stage_sums(text: str, method: str, route: str) -> dict[str, tuple[float, float]]:
    """stage -> (count, seconds) of that route's stage histogram."""
    found: dict[str, list[float]] = {}
    for kind in ("count", "sum"):
        pattern = re.compile(
            rf'memory_http_request_stage_seconds_{kind}\{{method="{method}",route="{re.escape(route)}",'
            rf'stage="(\w+)"\}} ([0-9.e+-]+)'
        )
        for stage, value in pattern.findall(text):
            found.setdefault(stage, []).append(float(value))
    return {stage: (v[0], v[1]) for stage, v in found.items()}


def request_seconds(text: str, method: str, route: str) -> float:
    match = re.search(
        rf'memory_http_request_duration_seconds_sum\{{method="{method}",route="{re.escape(route)}"\}} '
        r"([0-9.e+-]+)",
        text,
    )
    assert match, route
    return float(match.group(1))


async def test_a_write_reports_each_stage_and_they_add_up(
    client: Client, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    eid = (await client.post("/v1/executions", json={}, headers=h)).json()["id"]
    before = stage_sums(
        (await client.get("/metrics")).text, "POST", "/v1/executions/{execution_id}/steps"
    )
    for i in range(3):
        r = await client.post(
            f"/v1/executions/{eid}/steps", json={"kind": "a", "state": {"i": i}}, headers=h
        )
        assert r.status_code == 201, r.text
    text = (await client.get("/metrics")).text
    route = "/v1/executions/{execution_id}/steps"
    stages = stage_sums(text, "POST", route)
    for stage in ("parse", "auth", "admission", "database", "serialise", "other"):
        assert stage in stages, (stage, stages)
        count, seconds = stages[stage]
        assert count - before.get(stage, (0.0, 0.0))[0] == 3, (stage, stages)
        assert seconds > 0, stage
    assert "index" not in stages  # no vector index on this path
    # the stages are parts of the request: together they are its time
    total = request_seconds(text, "POST", route)
    assert abs(sum(s for _, s in stages.values()) - total) < 0.01 * total + 1e-6


async def test_a_request_without_a_body_or_a_database_has_neither_stage(client: Client) -> None:
    assert (await client.get("/health")).status_code == 200
    stages = stage_sums((await client.get("/metrics")).text, "GET", "/health")
    assert "other" in stages and "serialise" in stages
    assert "database" not in stages and "parse" not in stages and "auth" not in stages
