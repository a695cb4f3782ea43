"""The packaged model, the query cache, the command line, and sharing the embedded database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_service.config import Settings
from memory_service.embedding.embeddings import (
    CachedEmbedder,
    Embedder,
    EmbeddingError,
    HashEmbedder,
    SentenceTransformerEmbedder,
)
from memory_service.embedding.onnx import OnnxEmbedder


def test_packaged_model_gives_normalised_vectors_that_capture_meaning(real_embedder: Embedder) -> None:
    # the tests' model is the one the service ships: ONNX Runtime by default
    assert Settings().embedding_backend == "onnx" and isinstance(real_embedder, OnnxEmbedder)
    vectors = real_embedder.embed(
        ["I drink coffee every morning", "Each morning I have an espresso", "The tax form is due"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_repeated_queries_hit_the_cache() -> None:
    cached = CachedEmbedder(HashEmbedder(16), size=2)
    first = cached.embed_query("hello there")
    again = cached.embed_query("hello there")
    assert cached.hits == 1 and cached.misses == 1 and np.array_equal(first, again)
    cached.embed_query("a")
    cached.embed_query("b")  # evicts the oldest entry
    cached.embed_query("hello there")
    assert cached.misses == 4


def test_a_model_that_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="could not load embedding model"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model"))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_serve_fails_fast_when_the_model_cannot_load(database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        ["serve", "--port", "1"],
        {"MEMORY_DATABASE_URL": database_url, "MEMORY_EMBEDDING_MODEL": str(tmp_path / "nope")},
    )
    assert result.returncode == 2
    assert "could not load embedding model" in result.stderr


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    result = run_cli(["migrate"], {"MEMORY_PORT": "eighty"})
    assert result.returncode == 2 and "MEMORY_PORT" in result.stderr


def test_a_second_process_on_the_same_data_dir_shares_the_database(settings: Settings, database_url: str) -> None:
    if settings.database_url:
        pytest.skip("the suite runs on an external database")
    from memory_service.infra.migrate import run_migrations

    run_migrations(database_url, 384)
    # the session's server is up and migrated; a second process must join it, not start another
    result = run_cli(["migrate"], {"MEMORY_DATA_DIR": settings.data_dir, "MEMORY_EMBEDDING_MODEL": "hash:384"})
    assert result.returncode == 0, result.stderr
    assert "schema is current" in result.stdout
    import psycopg

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_server_runs_numpys_blas_on_one_thread() -> None:
    """A spinning second BLAS thread would take a core from other requests after each
    matrix product; the serve command leaves one."""
    script = (
        "import numpy, threadpoolctl\n"
        "threadpoolctl.threadpool_limits(2, user_api='blas')\n"
        "from cli.serve import one_blas_thread\n"
        "one_blas_thread()\n"
        "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info()"
        " if i['user_api'] == 'blas'))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"
