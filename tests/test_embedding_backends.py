"""The embedding backends: ONNX Runtime over a one-time export, and torch.

Both load the packaged model offline; the ONNX export is made once per data
directory, reused, and rebuilt (with a log line, not a crash) when it is missing
or corrupt. The two backends agree on the vectors.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from memory_service.config import Settings, SettingsError
from memory_service.embedding.embeddings import (
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    embedder_from_settings,
    packaged_model_path,
)
from memory_service.embedding.onnx import OnnxEmbedder, export_key, supports_onnx

pytestmark = pytest.mark.model

TEXTS = [
    "I drink espresso every morning before work.",
    "The mitochondria is the powerhouse of the cell, and it has its own DNA. " * 4,
    "ok",
    "Der Hund schläft im Garten.",
]


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="module")
def onnx_embedder(export_root: Path) -> OnnxEmbedder:
    return OnnxEmbedder(packaged_model_path(), export_root, name="all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def int8_embedder(export_root: Path) -> OnnxEmbedder:
    return OnnxEmbedder(packaged_model_path(), export_root, name="q", quantize=True)


def test_onnx_agrees_with_torch(onnx_embedder: OnnxEmbedder, torch_embedder: Embedder) -> None:
    ours = onnx_embedder.embed(TEXTS)
    theirs = torch_embedder.embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 0.9999, cosine
    # one text at a time (the query session) gives the same vectors
    alone = np.stack([onnx_embedder.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, ours, atol=1e-4)
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_export_is_reused(onnx_embedder: OnnxEmbedder, export_root: Path) -> None:
    before = onnx_embedder.model_file.stat().st_mtime_ns
    again = OnnxEmbedder(packaged_model_path(), export_root, name="again")
    assert again.model_file == onnx_embedder.model_file
    assert again.model_file.stat().st_mtime_ns == before


def test_corrupt_or_missing_export_is_rebuilt(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = onnx_embedder.model_file.parent
    copy = tmp_path / "exports" / folder.name
    shutil.copytree(folder, copy)
    (copy / "model.onnx").write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING, logger="memory_service.embedding.onnx"):
        rebuilt = OnnxEmbedder(packaged_model_path(), tmp_path / "exports", name="rebuilt")
    assert "corrupt" in caplog.text
    np.testing.assert_allclose(rebuilt.embed(TEXTS), onnx_embedder.embed(TEXTS), atol=1e-4)

    (copy / "model.onnx").unlink()
    (copy / "manifest.json").unlink()
    with caplog.at_level(logging.INFO, logger="memory_service.embedding.onnx"):
        OnnxEmbedder(packaged_model_path(), tmp_path / "exports", name="missing")
    assert "exporting" in caplog.text
    assert (copy / "model.onnx").stat().st_size > 1_000_000


def test_settings_choose_the_backend(
    onnx_embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # reuse the module's exports so this test does not export again
    for export in (onnx_embedder, int8_embedder):
        folder = export.model_file.parent
        shutil.copytree(folder, data / "onnx" / folder.name)
    # ONNX with int8 weights is the default; float weights and torch are a setting away
    onnx = embedder_from_settings(Settings(data_dir=str(data)))
    assert isinstance(onnx, OnnxEmbedder)
    assert onnx.model_file.parent.name == int8_embedder.model_file.parent.name
    assert onnx.model_name == "all-MiniLM-L6-v2"
    plain = embedder_from_settings(Settings(data_dir=str(data), embedding_quantize=False))
    assert isinstance(plain, OnnxEmbedder)
    assert plain.model_file.parent.name == onnx_embedder.model_file.parent.name
    torch = embedder_from_settings(Settings(data_dir=str(data), embedding_backend="torch"))
    assert isinstance(torch, SentenceTransformerEmbedder)
    one = embedder_from_settings(Settings(data_dir=str(data), embedding_query_threads=1))
    assert isinstance(one, OnnxEmbedder)
    assert float(one.embed(["a query"])[0] @ onnx.embed(["a query"])[0]) > 0.9999
    # a model named by path keeps working on either backend
    by_path = embedder_from_settings(
        Settings(data_dir=str(data), embedding_model=str(packaged_model_path()))
    )
    assert by_path.dimension == 384
    assert isinstance(embedder_from_settings(Settings(embedding_model="hash:16")), HashEmbedder)
    with pytest.raises(SettingsError):
        Settings.from_env({"MEMORY_EMBEDDING_BACKEND": "tensorflow"})
    with pytest.raises(SettingsError):
        Settings.from_env({"MEMORY_EMBEDDING_QUERY_THREADS": "0"})


def test_a_model_onnx_cannot_serve_keeps_torch(tmp_path: Path) -> None:
    odd = tmp_path / "odd-model"
    shutil.copytree(packaged_model_path(), odd)
    (odd / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},'
        ' {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]'
    )
    assert not supports_onnx(odd)
    assert supports_onnx(packaged_model_path())
    assert export_key(packaged_model_path(), False) != export_key(packaged_model_path(), True)


def _op_types(model_file: Path) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load(str(model_file)).graph.node]


def test_the_export_fuses_each_layer_and_a_bad_fusion_falls_back(
    onnx_embedder: OnnxEmbedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import memory_service.embedding.onnx_graph as module
    from memory_service.embedding.onnx_graph import export_with_torch, fuse

    served = _op_types(onnx_embedder.model_file)
    assert served.count("Attention") == 6  # one fused attention per layer of MiniLM-L6
    plain = tmp_path / "plain.onnx"
    assert export_with_torch(packaged_model_path(), plain) == (12, 384)
    assert "Attention" not in _op_types(plain)
    assert len(served) * 4 < len(_op_types(plain))
    wrong = tmp_path / "wrong.onnx"
    with caplog.at_level(logging.INFO, logger="memory_service.embedding.onnx_graph"):
        # a head count the graph does not have: the optimizer fuses nothing
        assert not fuse(plain, wrong, 4, 384)
        assert "fused no attention" in caplog.text
        # a fused graph whose numbers drift from the plain one's is refused by the probe
        probe = module.run_probe

        def drifting(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return probe(path, ids, mask) + (0.01 if path == wrong else 0.0)

        monkeypatch.setattr(module, "run_probe", drifting)
        assert not fuse(plain, wrong, 12, 384)
        assert "disagrees" in caplog.text
    assert not wrong.exists()
    monkeypatch.undo()
    assert fuse(plain, wrong, 12, 384)
    assert _op_types(wrong).count("Attention") == 6


def test_a_quantized_export_serves_the_plain_graph_in_int8(
    onnx_embedder: OnnxEmbedder, int8_embedder: OnnxEmbedder
) -> None:
    quantized = int8_embedder
    assert quantized.model_file != onnx_embedder.model_file
    assert "MatMulInteger" in _op_types(quantized.model_file)
    cosine = (quantized.embed(TEXTS) * onnx_embedder.embed(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.95, cosine  # per-tensor scales gave 0.80-0.87
