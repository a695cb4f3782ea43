"""Embedding backends side by side: torch, ONNX Runtime, and ONNX with int8 weights.

``onnx`` and ``onnx-int8`` embed a single query with two intra-op threads (the
default); ``-1q`` names the same backend with one. ``onnx-spin`` lets the query
session's threads spin between operators (ONNX Runtime's own default, which the
service turns off for single queries).

For each backend, in one run on one box:
- single-query latency (one short question at a time, the search path), on an idle
  box and again with two CPU-bound processes running beside it (a busy box);
- batch throughput for short texts (one or two sentences, as agents write);
- retrieval quality of the vectors alone: exact cosine top-k over SciFact
  (nDCG@10 over 5,183 abstracts) and LoCoMo (evidence R@10 per conversation), the
  part of ``make eval`` a backend can change (keyword ranking does not use it).

``python -m benchmarks.embedding_bench [--data DIR] [--quick]``; results go to
``benchmarks/results/embedding.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import common
from benchmarks.eval.datasets import load_locomo, load_scifact
from benchmarks.eval.metrics import ndcg_at, recall_at
from memory_service.embedding.embeddings import Embedder, load_embedder, packaged_model_path
from memory_service.embedding.onnx import OnnxEmbedder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUESTIONS = [
    "what did I have for breakfast",
    "which city does the user live in",
    "when is the next team meeting",
    "favourite programming language",
    "does the patient have any allergies",
]
SHORT = [
    "I moved to Lisbon last spring and I love the light there.",
    "Remind me to call the dentist on Tuesday.",
    "My sister's birthday is on the 3rd of May. She likes orchids.",
    "The build failed because the cache was stale; clearing it fixed it.",
]


def _burn(stop_at: float) -> None:
    x = 1.0
    while time.time() < stop_at:
        for _ in range(10_000):
            x = x * 1.0000001 + 1e-9


class Load:
    """Two CPU-bound processes (this box has two cores) for the busy-box measurements."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs: list[multiprocessing.Process] = []

    def __enter__(self) -> Load:
        stop_at = time.time() + self.seconds
        self.procs = [multiprocessing.Process(target=_burn, args=(stop_at,)) for _ in range(2)]
        for p in self.procs:
            p.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
            p.join()


def single_query_ms(embedder: Embedder, rounds: int) -> dict[str, float]:
    embedder.embed(["warm up"])
    samples = []
    for i in range(rounds):
        text = f"{QUESTIONS[i % len(QUESTIONS)]} {i}"  # distinct texts: no cache anywhere
        started = time.perf_counter()
        embedder.embed([text])
        samples.append(time.perf_counter() - started)
    return common.percentiles(samples)


def throughput(embedder: Embedder, texts: Sequence[str]) -> float:
    embedder.embed(list(texts[:64]))
    started = time.perf_counter()
    for start in range(0, len(texts), 1000):
        embedder.embed(list(texts[start : start + 1000]))
    return len(texts) / (time.perf_counter() - started)


def exact_rank(doc_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> np.ndarray:
    scores = query_vecs @ doc_vecs.T
    return np.argsort(-scores, axis=1)[:, :k]


def scifact_quality(embedder: Embedder, data: Path, limit: int | None) -> dict[str, float]:
    docs, questions = load_scifact(data)
    if limit:
        keep = {d for q in questions[: limit // 10] for d in q.relevant}
        docs = [d for d in docs if d.doc_id in keep] + docs[:limit]
        questions = questions[: limit // 10]
    doc_vecs = embed_all(embedder, [d.content for d in docs], "scifact docs")
    q_vecs = embedder.embed([q.text for q in questions])
    top = exact_rank(doc_vecs, q_vecs, 10)
    ids = [d.doc_id for d in docs]
    ndcg = [ndcg_at([ids[i] for i in row], q.relevant, 10) for row, q in zip(top, questions, strict=False)]
    rec = [recall_at([ids[i] for i in row], q.relevant, 10) for row, q in zip(top, questions, strict=False)]
    return {"ndcg@10": float(np.mean(ndcg)), "recall@10": float(np.mean(rec))}


def locomo_quality(embedder: Embedder, data: Path) -> dict[str, float]:
    docs, questions = load_locomo(data)
    doc_vecs = embed_all(embedder, [d.content for d in docs], "locomo turns")
    q_vecs = embedder.embed([q.text for q in questions])
    recalls = []
    for q, qv in zip(questions, q_vecs, strict=False):
        members = [i for i, d in enumerate(docs) if d.scope == q.scope]
        scores = doc_vecs[members] @ qv
        ranked = [docs[members[i]].doc_id for i in np.argsort(-scores)[:10]]
        recalls.append(recall_at(ranked, q.relevant, 10))
    return {"R@10": float(np.mean(recalls))}


def embed_all(embedder: Embedder, texts: list[str], label: str) -> np.ndarray:
    out = []
    for start in tqdm(range(0, len(texts), 256), desc=label, unit="batch"):
        out.append(embedder.embed(texts[start : start + 256]))
    return np.concatenate(out)


def backends(export_dir: Path) -> dict[str, Callable[[], Embedder]]:
    return {
        "torch": lambda: load_embedder(None, backend="torch", threads=2),
        "onnx": lambda: load_embedder(None, backend="onnx", export_dir=export_dir),
        "onnx-spin": lambda: OnnxEmbedder(
            packaged_model_path(), export_dir, name="all-MiniLM-L6-v2", query_spin=True
        ),
        "onnx-1q": lambda: load_embedder(
            None, backend="onnx", export_dir=export_dir, query_threads=1
        ),
        "onnx-int8": lambda: load_embedder(
            None, backend="onnx", export_dir=export_dir, quantize=True
        ),
        "onnx-int8-1q": lambda: load_embedder(
            None, backend="onnx", export_dir=export_dir, quantize=True, query_threads=1
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": common.machine(), "backends": {}}
    rounds = 30 if args.quick else 200
    short = [f"{SHORT[i % len(SHORT)]} ({i})" for i in range(500 if args.quick else 4000)]
    export_dir = Path(args.export_dir or tempfile.mkdtemp(prefix="onnx-bench-"))
    for name, make in backends(export_dir).items():
        if name not in args.backends.split(","):
            continue
        started = time.perf_counter()
        embedder = make()
        row: dict[str, Any] = {"load_s": round(time.perf_counter() - started, 1)}
        row["single_idle"] = single_query_ms(embedder, rounds)
        with Load(seconds=600):
            row["single_busy"] = single_query_ms(embedder, rounds)
        row["short_texts_per_s"] = round(throughput(embedder, short), 1)
        if not args.skip_quality and name in args.quality_backends.split(","):
            row["scifact"] = scifact_quality(embedder, args.data, 500 if args.quick else None)
            row["locomo"] = locomo_quality(embedder, args.data)
        out["backends"][name] = row
        print(name, json.dumps(row))
    return out


def _machine(m: Any) -> str:
    if not isinstance(m, dict):
        return str(m)
    return f"{m.get('cpus')} cores, {m.get('platform')}, Python {m.get('python')} ({m.get('note')})"


def _quality(row: dict[str, Any], data: str, metric: str) -> str:
    value = row.get(data, {}).get(metric)
    return "not measured" if value is None else f"{value:.4f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Embedding backends",
        "",
        (f"{_machine(results['machine'])}: `python -m benchmarks.embedding_bench`. Busy: two CPU-bound "
        "processes beside the measurement on the 2 cores."),
        "",
        ("| backend | single query p50 idle | p50 busy | busy/idle | short texts/s "
        "| SciFact nDCG@10 (vectors) | LoCoMo R@10 (vectors) |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["backends"].items():
        idle, busy = row["single_idle"]["p50_ms"], row["single_busy"]["p50_ms"]
        lines.append(
            f"| {name} | {idle:.2f} ms | {busy:.2f} ms | {busy / idle:.1f}x "
            f"| {row['short_texts_per_s']:.0f} "
            f"| {_quality(row, 'scifact', 'ndcg@10')} | {_quality(row, 'locomo', 'R@10')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("MEMORY_EVAL_DATA", ROOT.parent / "shared" / "data")),
    )
    parser.add_argument("--backends", default="torch,onnx,onnx-spin,onnx-1q,onnx-int8")
    parser.add_argument("--export-dir", help="reuse ONNX exports from this folder")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and documents")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument(
        "--quality-backends",
        default="torch,onnx,onnx-int8",
        help="backends whose retrieval quality is measured (the -1q and -spin variants "
        "run the same weights as their base, so their vectors are the same)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(args)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "embedding.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "embedding.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
