"""Shared fixtures: one embedded PostgreSQL per test session, the real app, tenants.

Every test gets a fresh tenant, which isolates its data as the service isolates
tenants; nothing is mocked. The real all-MiniLM-L6-v2 model is loaded once.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import (
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    embedder_from_settings,
)
from memory_service.infra import db
from memory_service.infra.secret_box import new_key

ADMIN_TOKEN = "test-admin-token"
# one secrets key for the whole session: in-process apps get it through the settings,
# service processes started by tests inherit it from the environment (a service on a
# database that holds secrets refuses to start without the key they were sealed with)
SECRETS_KEY = os.environ.setdefault("MEMORY_SECRETS_KEY", new_key())


def server_data_dir(name: str) -> Path:
    """A data directory for an embedded PostgreSQL, outside pytest's temporary root.

    The embedded server runs as its own system user, so every folder above its data
    directory must be traversable; pytest resets its root (``/tmp/pytest-of-<user>``)
    to mode 0700 whenever another test session starts on the machine, which would
    cut a running server off from its own files.
    """
    path = Path(tempfile.mkdtemp(prefix=f"memory-service-{name}-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return server_data_dir("tests")


@pytest.fixture(scope="session", autouse=True)
def shared_onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Services started by tests in fresh data directories share one ONNX export,
    so the model is exported once per test session rather than once per service."""
    folder = tmp_path_factory.mktemp("onnx-exports")
    previous = os.environ.get("MEMORY_EMBEDDING_EXPORT_DIR")
    os.environ["MEMORY_EMBEDDING_EXPORT_DIR"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("MEMORY_EMBEDDING_EXPORT_DIR", None)
    else:
        os.environ["MEMORY_EMBEDDING_EXPORT_DIR"] = previous


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=str(data_dir),
        database_url=os.environ.get("MEMORY_TEST_DATABASE_URL") or None,
        admin_token=ADMIN_TOKEN,
        db_pool_max=8,
        secrets_key=SECRETS_KEY,
        workflow_poll_interval_s=0.2,
        record_search_events=True,  # the event log's tests read them; off by default
        # every test shares this app and one client address: the per-address limit on
        # requests without a valid key (tests/test_fairness.py tests it on apps of its
        # own) would otherwise turn one test's 401 walk into another test's 429s
        anonymous_requests_per_second=10_000.0,
        anonymous_request_burst=10_000,
    )


@pytest.fixture(scope="session")
def database_url(settings: Settings) -> Iterator[str]:
    yield db.resolve_database_url(settings)


@pytest.fixture(scope="session")
def real_embedder(settings: Settings, shared_onnx_exports: None) -> Embedder:
    """The embedder the service ships, built as the app builds it from its settings
    (today ONNX Runtime with int8 weights), so retrieval tests measure what runs in
    production; the export is shared with the service processes tests start."""
    export_dir = os.environ["MEMORY_EMBEDDING_EXPORT_DIR"]
    return embedder_from_settings(settings.with_(embedding_export_dir=export_dir))


@pytest.fixture(scope="session")
def torch_embedder() -> Embedder:
    """The model on torch: the reference the ONNX backend is compared against."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def hash_embedder() -> Embedder:
    return HashEmbedder(384)


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: str, real_embedder: Embedder) -> Litestar:
    return create_app(settings, embedder=real_embedder)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app, timeout=60) as c:
        yield c


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def new_tenant(client: AsyncTestClient[Litestar], name: str | None = None) -> dict[str, Any]:
    response = await client.post(
        "/v1/admin/tenants", json={"name": name or f"t-{uuid.uuid4().hex[:8]}"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body = response.json()
    body["headers"] = {"Authorization": f"Bearer {body['api_key']}"}
    return body


@pytest.fixture
async def tenant(client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    """A fresh tenant: ``{"id", "name", "api_key", "headers"}``."""
    return await new_tenant(client)


@pytest.fixture
async def other_tenant(client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    return await new_tenant(client)


def assert_problem(response: Any, status: int, *, mentions: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem document with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    for key in ("type", "title", "status", "detail", "trace_id"):
        assert key in body, body
    assert body["status"] == status
    assert len(body["trace_id"]) == 32
    if mentions is not None:
        assert mentions.lower() in (body["detail"] + str(body.get("errors", ""))).lower(), body
    for leak in ("Traceback", "psycopg", "SELECT ", "/work/", "site-packages"):
        assert leak not in response.text
    return body


@pytest.fixture(scope="session")
def live_url(settings: Settings, database_url: str, real_embedder: Embedder) -> Iterator[str]:
    """The real app behind uvicorn on a real port, in a thread of its own, so blocking
    clients (the Python client, LangGraph, notebooks' kernels) can call it."""
    import threading
    import time

    import uvicorn

    config = uvicorn.Config(
        create_app(settings, embedder=real_embedder),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the live server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it loudly when the browser tests could not run."""
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "BROWSER TESTS SKIPPED" in str(getattr(r, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} BROWSER TESTS SKIPPED: install chromium and chromium-driver",
            red=True,
            bold=True,
        )
