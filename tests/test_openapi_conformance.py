"""The live OpenAPI document tells the truth: schemathesis (``--checks all``) against a real server.

A short, seeded run over every operation with a tenant key, and one over the admin
operations with the admin token. ``make fuzz`` runs the same with far more cases
(``FUZZ_EXAMPLES``), the coverage phase and stateful sequences. Both must end
with no failure: no server error, no undocumented status code or content type,
no response that breaks its schema, no schema-valid request refused and no
schema-violating one accepted. ``tests/schemathesis_hooks.py`` writes NDJSON
bodies and keeps invented cursors out of positive cases; ``tests/schemathesis.toml``
lists the two places the schema cannot be exact (see docs/api-contract.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from memory_service.config import Settings
from tests.conftest import ADMIN_TOKEN, new_tenant
from tests.live_http import serve

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"
# `make fuzz` sets FUZZ_EXAMPLES: every phase, far more cases, a random seed
FUZZ = int(os.environ.get("FUZZ_EXAMPLES", "0"))
TENANT_RUN = (
    ["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(FUZZ)]
    if FUZZ
    # the seeded run replays no example saved by an earlier run on this machine, so it
    # generates here what it generates on a fresh clone
    else ["--phases", "examples,fuzzing", "--max-examples", "2", "--seed", "11", "--generation-database", "none"]
)
# the admin routes are few: every phase, seeded in CI as above
ADMIN_RUN = ["--max-examples", str(FUZZ or 5)] + (
    [] if FUZZ else ["--seed", "11", "--generation-database", "none"]
)


def schemathesis_command(base: str, token: str, *extra: str) -> list[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    return [
        str(cli), "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{base}/schema/openapi.json",
        "-H", f"Authorization: Bearer {token}", "--no-color", *extra,
    ]


async def run(command: list[str]) -> tuple[int, str]:
    env = {
        **os.environ,
        "SCHEMATHESIS_TELEMETRY": "false",
        "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/.hypothesis",
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = await anyio.run_process(command, check=False, env=env)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def failures(out: str, run_name: str) -> str:
    """The failures section first (the summary alone does not say what failed); the
    whole report goes to tests/artifacts/, since a long run's is longer than a message."""
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / f"schemathesis-{run_name}.txt"
    report.write_text(out, encoding="utf-8")
    start = out.find("= FAILURES =")
    found = out[start:start + 12000] + "\n...\n" if start >= 0 else ""
    return f"the whole report: {report}\n{found}{out[-3000:]}"


async def test_schemathesis_finds_nothing(client: Any, settings: Settings, database_url: str) -> None:
    tenant = await new_tenant(client)
    live = settings.with_(database_url=database_url)
    async with serve(live) as base:
        code, out = await run(schemathesis_command(
            base, tenant["api_key"], *TENANT_RUN, "--exclude-path-regex", "^/v1/admin"
        ))
        print(out[-400:])
        assert code == 0, failures(out, "tenant")
        code, out = await run(schemathesis_command(
            base, ADMIN_TOKEN, *ADMIN_RUN, "--include-path-regex", "^/v1/admin"
        ))
        print(out[-400:])
        assert code == 0, failures(out, "admin")
