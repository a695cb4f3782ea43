"""Building the ONNX graph of a sentence-transformers model: export, fusion, quantisation.

The offline steps behind ``onnx.ensure_export`` (which owns the cache folder,
its lock and its manifest): the transformer exported with the TorchScript
exporter, each layer's attention fused by ONNX Runtime's transformer optimizer
and kept only when a probe gives the plain graph's numbers, and the int8
dynamic quantisation of the plain graph. Each step quiets the libraries' own
chatter into this module's log.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def export_with_torch(model_dir: Path, target: Path) -> tuple[int, int] | None:
    """Export the transformer; ``(heads, hidden size)`` when its attention can be fused."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # the weights load in a fraction of a second; their progress bar is noise in a start-up log
    transformers_logging.disable_progress_bar()
    try:
        st = SentenceTransformer(
            str(model_dir),
            device="cpu",
            local_files_only=True,
            model_kwargs={"attn_implementation": "eager"},
        )
    finally:
        transformers_logging.enable_progress_bar()
    transformer: Any = st[0].auto_model
    transformer.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out[0]

    dummy = torch.ones((1, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    # the TorchScript exporter warns that it is deprecated and traces with tracer
    # warnings about the model's Python control flow: none of them concern this
    # fixed-shape-free encoder, and a one-time export must not fail on them
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "last_hidden_state": axes,
            },
            opset_version=17,
            dynamo=False,
        )
    config = transformer.config
    if getattr(config, "model_type", "") not in _FUSABLE_MODEL_TYPES:
        return None
    return int(config.num_attention_heads), int(config.hidden_size)


# the architectures whose fused graph was checked here; others serve the plain graph
_FUSABLE_MODEL_TYPES = ("bert",)
_FUSED_OPS = ("Attention", "MultiHeadAttention")
_OPTIMIZER_LOGGERS = ("onnx_model", "onnx_model_bert", "fusion_base", "fusion_utils")


def run_probe(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return np.asarray(session.run(["last_hidden_state"], feeds)[0])


def fuse(plain: Path, target: Path, heads: int, hidden: int) -> bool:
    """Write the fused graph of ``plain`` to ``target``; False (and no file) if it would not do."""
    from onnxruntime.transformers.optimizer import optimize_model

    # the optimizer reports every fusion at INFO through loggers of its own
    chatty = [logging.getLogger(name) for name in _OPTIMIZER_LOGGERS]
    levels = [logger.level for logger in chatty]
    for logger in chatty:
        logger.setLevel(logging.WARNING)
    try:
        optimized = optimize_model(
            str(plain), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        fused = optimized.get_fused_operator_statistics()
        if not any(fused.get(op, 0) for op in _FUSED_OPS):
            log.info("the ONNX optimizer fused no attention in %s; serving it unfused", plain)
            return False
        optimized.save_model_to_file(str(target))
        # a padded batch of two: the masked tail must stay masked in the fused graph
        ids = np.array([[101, 7592, 2088, 102, 0, 0], [101, 7592, 2088, 2003, 2204, 102]])
        mask = (ids != 0).astype(np.int64)
        expected, got = run_probe(plain, ids, mask), run_probe(target, ids, mask)
        keep = mask[:, :, None].astype(bool)
        if not np.allclose(np.where(keep, got, 0), np.where(keep, expected, 0), atol=1e-3):
            log.warning("the fused ONNX graph disagrees with the plain one; serving it unfused")
            target.unlink(missing_ok=True)
            return False
        return True
    except Exception as exc:  # the optimizer is best effort: the plain graph is correct
        log.warning("could not fuse the ONNX graph of %s (%s); serving it unfused", plain, exc)
        target.unlink(missing_ok=True)
        return False
    finally:
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)


class _QuantizerToDebug(logging.Filter):
    """onnxruntime's quantiser reports every tensor it skips (about 50 lines) through the
    root logger at INFO and WARNING; they go to this module's debug log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname:
            return True
        log.debug("onnxruntime quantiser: %s", record.getMessage())
        return False


def quantize_graph(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuantizerToDebug()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        # one scale per output channel: with one scale per tensor the vectors of MiniLM
        # drift to cosine 0.80-0.87 from the float model's; per channel keeps 0.98-0.99
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(quiet)
