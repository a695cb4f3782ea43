"""The cross-encoder re-ranker: a small transformer that reads the query and a memory together.

``"rerank": "cross"`` re-scores the first ``cross_encoder_candidates`` (20) hits of
the search's own order (after fusion, the time preference and ``context_by``) by a
sentence-transformers ``CrossEncoder`` read from ``MEMORY_CROSS_ENCODER_PATH``: the
model sees ``query [SEP] content + context`` (the text the memory was embedded
from) and gives one logit, its log-odds that the memory answers the query. The
re-scored hits come first, best first; the rest of the pool keeps its order below
them, each scored a hair under the lowest re-scored one, so scores still fall
down the list. With ``explain`` a hit's components are ``cross`` (the model's
logit, for re-scored hits) and ``first_stage`` (its score before).

The model is not shipped: ``make train-cross-encoder`` (``benchmarks/
train_cross_encoder.py``) fine-tunes it from the packaged all-MiniLM-L6-v2 weights
(its first layers) on the same training data as the learned ranker. Inference is
torch on the CPU, blocking: callers run ``rerank`` in a worker thread, one at a time
(a torch module is not safe to call from several threads at once).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_service.memories.models import SearchHit

if TYPE_CHECKING:
    from memory_service.config import Settings

log = logging.getLogger(__name__)

HOW_TO_BUILD = (
    "build one with `make train-cross-encoder` and point MEMORY_CROSS_ENCODER_PATH at its "
    "folder (see docs/search.md, Ranking)"
)
TAIL_STEP = 1e-6  # how far below the lowest re-scored hit each later hit of the pool sits


def memory_text(hit: SearchHit) -> str:
    """What the model reads of a memory: what it was embedded from (content, context)."""
    context = hit.memory.context
    return hit.memory.content + ("\n" + context if context else "")


class CrossEncoderRanker:
    """A fine-tuned ``CrossEncoder`` and how many of a pool's first hits it re-scores."""

    def __init__(self, path: Path, *, candidates: int = 20) -> None:
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self._model: Any = CrossEncoder(str(path), device="cpu", local_files_only=True)
        if int(self._model.config.num_labels) != 1:
            raise ValueError(f"{path}: a re-ranking cross-encoder gives one score per pair")
        self.path = path
        self.candidates = candidates
        self.layers = int(self._model.config.num_hidden_layers)
        self.max_length = int(self._model.max_seq_length or 256)
        self._lock = threading.Lock()

    def scores(self, query: str, texts: list[str]) -> np.ndarray:
        """The model's logit for each (query, text) pair."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        with self._lock:
            raw = self._model.predict(
                [(query, t) for t in texts],
                batch_size=len(texts),
                activation_fn=_identity,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(raw, dtype=np.float64).reshape(-1)

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        """The first ``candidates`` hits re-scored and re-ordered (ties keep the earlier
        order), then the rest of ``hits`` in their own order, scored below them."""
        head, tail = hits[: self.candidates], hits[self.candidates :]
        if not head:
            return hits
        logits = self.scores(query, [memory_text(h) for h in head])
        for hit, logit in zip(head, logits, strict=True):
            hit.components = {"cross": float(logit), "first_stage": hit.score}
            hit.score = float(logit)
        order = sorted(range(len(head)), key=lambda i: (-head[i].score, i))
        ranked = [head[i] for i in order]
        low = ranked[-1].score
        for i, hit in enumerate(tail, start=1):
            hit.components = {"first_stage": hit.score}
            hit.score = low - i * TAIL_STEP
        return ranked + tail


def _identity(x: Any) -> Any:
    return x


def load_cross_encoder(settings: Settings) -> CrossEncoderRanker | None:
    """The configured model, or None (with a log line) when none is configured or it
    cannot be read: ``"rerank": "cross"`` then answers 422 saying how to build one."""
    if not settings.cross_encoder_path:
        return None
    path = Path(settings.cross_encoder_path).expanduser()
    if not (path / "config.json").is_file():
        log.warning("no cross-encoder at %s (MEMORY_CROSS_ENCODER_PATH); %s", path, HOW_TO_BUILD)
        return None
    try:
        ranker = CrossEncoderRanker(path, candidates=settings.cross_encoder_candidates)
    except Exception:
        log.exception("could not load the cross-encoder at %s; %s", path, HOW_TO_BUILD)
        return None
    log.info("cross-encoder: %s (%d layers, %d tokens)", path, ranker.layers, ranker.max_length)
    return ranker


def unavailable_reason(settings: Settings) -> str:
    """Why ``"rerank": "cross"`` cannot run, for the 422 (no server path in it)."""
    if not settings.cross_encoder_path:
        return f"rerank 'cross' needs a cross-encoder model, and none is configured: {HOW_TO_BUILD}"
    return f"rerank 'cross': the configured cross-encoder could not be loaded; {HOW_TO_BUILD}"
