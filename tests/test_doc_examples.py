"""Every runnable example in README.md and docs/*.md runs against a real service.

A fenced block whose info string is ``sh run``, ``bash run`` or ``python run`` is
executed as it stands, in order, each in a fresh process, against the live app with
the real model. Each document gets a tenant of its own; the block sees
``BASE``/``MEMORY_SERVICE_URL`` (the service), ``KEY``/``MEMORY_API_KEY`` (that
tenant's key) and ``MEMORY_ADMIN_TOKEN``. A block followed by a ``json response``
block must print a JSON document of the same shape (the same keys, recursively;
values such as ids and times differ run to run). Every ``make`` target the
documents name must exist in the Makefile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([a-z]+)(?: ([a-z]+))?\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    document: Path
    number: int
    language: str
    code: str
    response: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}#{self.number}"


def runnable_examples(document: Path) -> list[Example]:
    found: list[Example] = []
    blocks = list(FENCE.finditer(document.read_text()))
    for i, block in enumerate(blocks):
        language, marker, code = block[1], block[2], block[3]
        if marker != "run":
            continue
        response = None
        if i + 1 < len(blocks) and blocks[i + 1][2] == "response":
            response = blocks[i + 1][3]
        found.append(Example(document, len(found) + 1, language, code, response))
    return found


EXAMPLES = [example for document in DOCUMENTS for example in runnable_examples(document)]


def same_shape(documented: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` lacks what ``documented`` shows: keys, and the kinds of values."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        problems = [f"{path}.{key}: missing" for key in documented if key not in actual]
        for key in documented.keys() & actual.keys():
            problems += same_shape(documented[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(documented, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {type(actual).__name__}"]
        if documented and actual:
            return same_shape(documented[0], actual[0], f"{path}[0]")
        return []
    if documented is None or actual is None:
        return []
    kinds = (bool, (int, float), str)
    for kind in kinds:
        if isinstance(documented, kind) and not isinstance(actual, kind):
            return [f"{path}: expected {type(documented).__name__}, got {type(actual).__name__}"]
    return []


@pytest.fixture(scope="module")
def tenants(live_url: str) -> dict[Path, str]:
    """One tenant per document, so a document's examples build on each other."""
    keys: dict[Path, str] = {}
    with httpx.Client(base_url=live_url, timeout=30) as http:
        for document in DOCUMENTS:
            response = http.post("/v1/admin/tenants", json={"name": "docs"}, headers=ADMIN)
            assert response.status_code == 201, response.text
            keys[document] = response.json()["api_key"]
    return keys


def test_the_documents_have_runnable_examples() -> None:
    assert len(EXAMPLES) >= 20, [e.name for e in EXAMPLES]
    assert {e.document.name for e in EXAMPLES} >= {"README.md", "api.md", "search.md"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_runs(example: Example, live_url: str, tenants: dict[Path, str]) -> None:
    key = tenants[example.document]
    env = {
        **os.environ,
        "BASE": live_url,
        "MEMORY_SERVICE_URL": live_url,
        "KEY": key,
        "MEMORY_API_KEY": key,
        "MEMORY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if example.language in ("sh", "bash"):
        command = ["bash", "-euo", "pipefail", "-c", example.code]
    elif example.language == "python":
        command = [sys.executable, "-c", example.code]
    else:
        pytest.fail(f"{example.name}: no runner for {example.language!r} blocks")
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout}\n{done.stderr}"
    if example.response is not None:
        printed = done.stdout.strip().splitlines()
        assert printed, f"{example.name} printed nothing; its documented response cannot be checked"
        actual = json.loads(printed[-1])
        problems = same_shape(json.loads(example.response), actual)
        assert not problems, f"{example.name}: the response differs from the document: {problems}"


def test_every_make_target_the_documents_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named: set[tuple[str, str]] = set()
    for document in DOCUMENTS:
        for target in re.findall(r"(?:`|^)make ([a-z][a-z0-9-]*)", document.read_text(), re.MULTILINE):
            named.add((document.name, target))
    assert named, "no document names a make target"
    missing = sorted(f"{doc}: make {target}" for doc, target in named if target not in targets)
    assert not missing, missing


def test_the_readme_showcase_ranks_the_espresso_first(live_url: str) -> None:
    """The README's first search finds what it promises whatever else alice said, in
    vector and in hybrid mode (the query and memories are read from the README)."""
    showcase = runnable_examples(ROOT / "README.md")[0].code
    contents = re.findall(r'"content": "([^"]+)"', showcase)
    query = re.findall(r'"query": "([^"]+)"', showcase)[0]
    assert any("espresso" in c for c in contents), contents
    distractors = [
        "I drink sparkling water with lunch", "My coffee mug is blue",
        "I walk the dog every morning", "Breakfast is usually porridge with honey",
        "I stopped drinking soda last year", "The office kitchen has a new kettle",
    ]
    with httpx.Client(base_url=live_url, timeout=60) as http:
        created = http.post("/v1/admin/tenants", json={"name": "showcase"}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        items = [{"content": c, "user_id": "alice"} for c in contents + distractors]
        assert http.post("/v1/memories/batch", json={"items": items}, headers=headers).status_code == 201
        for mode in ("vector", "hybrid"):
            body = {"query": query, "user_id": "alice", "k": 3, "mode": mode}
            response = http.post("/v1/memories/search", json=body, headers=headers)
            assert response.status_code == 200, response.text
            top = response.json()["results"][0]["memory"]["content"]
            assert "espresso" in top, (mode, response.json()["results"])
