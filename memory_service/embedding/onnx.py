"""The ONNX Runtime embedding backend: a sentence-transformers model exported once, offline.

Why this exists: on a busy 2-core box a single torch forward pass for one short query
can take hundreds of milliseconds, because torch's intra-op thread pool fights every
other process for the cores; ONNX Runtime with a fixed, small thread count stays
predictable, and its kernels for a 6-layer MiniLM are faster on CPU in any case.

How it works: the model's transformer is exported with ``torch.onnx`` (the
TorchScript exporter: it needs nothing beyond torch, unlike the ``optimum`` route,
whose pinned versions conflict with the sentence-transformers and transformers this
project installs) into ``<data_dir>/onnx/<model key>/model.onnx``, next to a manifest
holding the file's SHA-256. Later starts check the manifest and reuse the file; a
missing or corrupt export is rebuilt, with a log line, never a crash. Serving needs
only ``onnxruntime`` and the model's own fast tokenizer (``tokenizer.json``); pooling
and normalisation follow the model's sentence-transformers configuration. Models whose
pipeline is not ``Transformer -> Pooling (mean or cls) -> Normalize`` are not
exportable this way; :func:`supports_onnx` says so and the caller keeps torch.

After the export, ONNX Runtime's transformer optimizer fuses each layer's attention,
layer norms and GELU into single operators (the model is loaded with eager attention for
the export, the form the optimizer recognises). A single query then runs about 50 graph
nodes instead of about 340, and every node is a hand-off between the two intra-op
threads: fewer hand-offs is what makes one short query faster. The fused graph is kept
only if it gives the plain graph's vectors on a probe (padded batch included);
otherwise the plain export serves, with a log line. These build steps live in ``onnx_graph.py``;
this module owns the cached export (folder, lock, manifest) and serving.

Two inference sessions share the exported file: one with ``query_threads`` intra-op
threads for single queries (latency), one with ``batch_threads`` for batches
(throughput when ingesting).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_service.embedding.onnx_graph import export_with_torch, fuse, quantize_graph
from memory_service.embedding.types import EmbeddingError, Matrix

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2
_SUPPORTED_POOLING = ("mean", "cls")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def pipeline_of(model_dir: Path) -> tuple[str, bool, int] | None:
    """``(pooling, normalize, max_seq_length)`` when the model can be served by ONNX."""
    modules_file = model_dir / "modules.json"
    if not (modules_file.is_file() and (model_dir / "tokenizer.json").is_file()):
        return None
    modules = _read_json(modules_file)
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    if modules[0].get("path", "") not in ("", "."):
        return None
    pooling_cfg = _read_json(model_dir / modules[1]["path"] / "config.json")
    if pooling_cfg.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pooling_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        return None
    max_len = 512
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = int(_read_json(st_cfg).get("max_seq_length") or max_len)
    return pooling, len(kinds) == 3, max_len


def supports_onnx(model_dir: Path) -> bool:
    return model_dir.is_dir() and pipeline_of(model_dir) is not None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_key(model_dir: Path, quantize: bool) -> str:
    """A folder name that changes when the model's weights or the export options change."""
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    ident = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in weights)
    ident += f"|{model_dir.resolve()}|q={quantize}|f={EXPORT_FORMAT}"
    return f"{model_dir.name}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def ensure_export(model_dir: Path, export_root: Path, *, quantize: bool = False) -> Path:
    """The exported ``model.onnx`` for ``model_dir``, exporting it when missing or corrupt.

    A file lock makes concurrent starts on one data directory export once.
    """
    folder = export_root / export_key(model_dir, quantize)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _ensure_export_locked(model_dir, folder, quantize)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_export_locked(model_dir: Path, folder: Path, quantize: bool) -> Path:
    model_file = folder / "model.onnx"
    manifest_file = folder / "manifest.json"
    if model_file.is_file() and manifest_file.is_file():
        try:
            if _read_json(manifest_file).get("sha256") == _sha256(model_file):
                return model_file
        except (OSError, ValueError):
            pass
        log.warning("the ONNX export in %s is corrupt or incomplete; exporting it again", folder)
    else:
        log.info("exporting %s to ONNX in %s (once)", model_dir.name, folder)
    staging = folder / f"model.onnx.{os.getpid()}.tmp"
    fused = False
    try:
        fusable = export_with_torch(model_dir, staging)
        # int8 quantisation works on the plain graph: it cannot type the fused operators
        if fusable is not None and not quantize:
            fused_file = staging.with_suffix(".fused")
            fused = fuse(staging, fused_file, *fusable)
            if fused:
                os.replace(fused_file, staging)
        if quantize:
            plain = staging.with_suffix(".plain")
            staging.rename(plain)
            quantize_graph(plain, staging)
            plain.unlink()
        os.replace(staging, model_file)
    except Exception as exc:
        staging.unlink(missing_ok=True)
        raise EmbeddingError(f"could not export {model_dir} to ONNX: {exc}") from exc
    manifest = {
        "sha256": _sha256(model_file),
        "source": str(model_dir),
        "quantized": quantize,
        "fused": fused,
    }
    manifest_file.write_text(json.dumps(manifest), "utf-8")
    return model_file


class OnnxEmbedder:
    """A sentence-transformers model served by ONNX Runtime (see the module docstring)."""

    def __init__(
        self,
        model_dir: Path,
        export_root: Path,
        *,
        name: str,
        batch_size: int = 64,
        batch_threads: int = 2,
        query_threads: int = 2,
        quantize: bool = False,
        query_spin: bool = False,
    ) -> None:
        pipeline = pipeline_of(model_dir)
        if pipeline is None:
            raise EmbeddingError(f"model {model_dir} cannot be served by the ONNX backend")
        self._pooling, self._normalize, max_len = pipeline
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            model_file = ensure_export(model_dir, export_root, quantize=quantize)
            try:
                self._query_session = self._session(ort, model_file, query_threads, spin=query_spin)
            except Exception:
                log.warning("ONNX Runtime could not load %s; exporting it again", model_file)
                model_file.unlink(missing_ok=True)
                model_file = ensure_export(model_dir, export_root, quantize=quantize)
                self._query_session = self._session(ort, model_file, query_threads, spin=query_spin)
            self._batch_session = self._session(ort, model_file, max(1, batch_threads), spin=True)
            self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"could not load ONNX model for {model_dir}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=max_len)
        self._tokenizer.no_padding()
        self._max_len = max_len
        self._name = name
        self._batch_size = batch_size
        self._dimension = int(self.embed(["dimension probe"]).shape[1])
        self.model_file = model_file

    @staticmethod
    def _session(ort: Any, model_file: Path, threads: int, *, spin: bool) -> Any:
        # A single query is a few milliseconds of work: worker threads that spin between
        # operators win a fraction of a millisecond on an idle box but fight every other
        # process for the cores on a busy one (measured: 2.3-3.3x idle with spinning,
        # 1.0-2.6x without). Batches are long enough for spinning to pay.
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, getattr(self, "_dimension", 0)), dtype=np.float32)
        # one text: encode it here; encode_batch hands even one text to the tokenizer's
        # thread pool, a wake-up that costs more than the text's tokenisation
        if len(texts) == 1:
            encodings = [self._tokenizer.encode(texts[0])]
        else:
            encodings = self._tokenizer.encode_batch(list(texts))
        session = self._query_session if len(texts) == 1 else self._batch_session
        # sort by length so each batch pads to its own longest text, as sentence-transformers does
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: Matrix | None = None
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            vectors = self._forward(session, [encodings[i] for i in chunk])
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
        assert out is not None
        return out

    def _forward(self, session: Any, encodings: list[Any]) -> Matrix:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        (hidden,) = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        if self._pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled = pooled.astype(np.float32)
        if self._normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled /= np.clip(norms, 1e-12, None)
        return np.ascontiguousarray(pooled)
