"""The learned re-ranker's training data: which questions, and the service's answers to them.

SciFact's train queries and LoCoMo's dev conversations (once per context
variant, as ``make eval`` loads them) are loaded into a real service and asked
in hybrid mode, explained and not re-ranked; each answer's hits are kept as
records (document id, score, components) for ``train_ranker`` to turn into
feature rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.eval.datasets import Document, Question, load_locomo, load_scifact
from benchmarks.eval.runs import LOCOMO_CONTEXTS, LOCOMO_DEV

ROOT = Path(__file__).resolve().parent.parent
Answers = list[list[list[dict[str, Any]]]]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options saying where a trainer's questions and answers come from."""
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("MEMORY_EVAL_DATA", ROOT.parent / "shared" / "data")),
    )
    parser.add_argument("--limit", type=int, default=None, help="questions per data set (a slice)")
    parser.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="a .json.gz of the service's answers: read it if it exists (no service), else "
        "write it",
    )
    parser.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="document vectors from make eval's cache (benchmarks/.cache); off: the service "
        "embeds them",
    )


def sets_and_answers(args: argparse.Namespace, pool_size: int) -> tuple[list[TrainingSet], Answers]:
    """The training sets and the service's answers to them (read from ``--answers`` when
    that file exists, else asked of a service started here and saved there)."""
    sets = training_sets(args.data, args.limit)
    if args.answers is not None and args.answers.exists():
        return sets, json.loads(gzip.decompress(args.answers.read_bytes()))
    export = ROOT / "benchmarks" / ".cache" / "onnx-export" if args.cache else None
    answers = collect(sets, pool_size, export)
    if args.answers is not None:
        args.answers.write_bytes(gzip.compress(json.dumps(answers).encode()))
    return sets, answers


def record(raw: dict[str, Any]) -> dict[str, Any]:
    """What the training keeps of a search answer's hit (the rest comes from the data)."""
    m = raw["memory"]
    return {
        "doc_id": m["metadata"]["doc_id"],
        "id": m["id"],
        "user_id": m.get("user_id"),
        "created_at": m["created_at"],
        "score": float(raw["score"]),
        "components": dict(raw.get("components") or {}),
    }


TrainingSet = tuple[str, list[Document], list[Question], str]  # name, docs, questions, suffix


def training_sets(data: Path, limit: int | None) -> list[TrainingSet]:
    """SciFact's train queries and LoCoMo's dev conversations, once per context variant;
    with ``limit``, that many questions of each and only the documents around them."""
    sets: list[TrainingSet] = []
    docs, questions = load_scifact(data, split="train")
    sets.append(("scifact", docs, questions, ""))
    for context in LOCOMO_CONTEXTS:
        docs, questions = load_locomo(data, context=context)
        dev = list(dict.fromkeys(q.scope for q in questions))[:LOCOMO_DEV]
        keep = [d for d in docs if d.scope in dev]
        sets.append(("locomo", keep, [q for q in questions if q.scope in dev], f"/{context}"))
    if limit is None:
        return sets
    sliced = []
    for name, docs, questions, suffix in sets:
        asked = questions[:limit]
        wanted = {i for q in asked for i in q.relevant}
        kept = [d for d in docs if d.doc_id in wanted or d.scope in {q.scope for q in asked}]
        sliced.append(
            (name, kept[: 40 * limit] + [d for d in kept if d.doc_id in wanted], asked, suffix)
        )
    return sliced


def collect(sets: list[TrainingSet], pool_size: int, export_dir: Path | None) -> Answers:
    """Start the service, load each set and ask its questions: per set, per question,
    the top ``pool_size`` hits of hybrid without re-ranking, with their components."""
    from benchmarks.eval.service import RunningService

    env = {"MEMORY_QUERY_CACHE_SIZE": "0"}
    cache = None
    if export_dir is not None:
        from benchmarks.eval.embed_cache import EmbeddingCache
        from memory_service.embedding.embeddings import load_embedder

        env["MEMORY_EMBEDDING_EXPORT_DIR"] = str(export_dir)
        embedder = load_embedder(None, backend="onnx", export_dir=export_dir, quantize=True)
        export = getattr(embedder, "model_file", None)
        label = f"onnx-{export.parent.name}" if export is not None else "onnx-int8"
        cache = EmbeddingCache(export_dir.parent / label, embedder)
    answers: Answers = []
    with RunningService(env=env) as service:
        client = service.new_tenant("train-ranker")
        for name, docs, questions, suffix in sets:
            _load(client, cache, unique_documents(docs), name, suffix)
            per_question = []
            for q in questions:
                answer = client.search(search_body(q, suffix, pool_size))
                per_question.append([record(r) for r in answer["results"]])
            answers.append(per_question)
            print(f"{name}{suffix}: {len(questions)} questions")
    return answers


def unique_documents(docs: list[Document]) -> list[Document]:
    """Each document once (LoCoMo's turn ids repeat across conversations: keyed by scope)."""
    return list({(d.scope, d.doc_id): d for d in docs}.values())


def _load(client: Any, cache: Any, docs: list[Document], name: str, suffix: str) -> None:
    if cache is not None:
        from benchmarks.eval_retrieval import load_documents

        load_documents(client, cache, docs, f"{name}{suffix}", suffix)
        return
    for start in range(0, len(docs), 500):
        client.add_batch(items_for(docs[start : start + 500], suffix))


def items_for(docs: Sequence[Document], suffix: str) -> list[dict[str, Any]]:
    """Batch items of ``docs`` for the service to embed (no vectors sent)."""
    from benchmarks.eval_retrieval import memory_item

    return [memory_item(doc, suffix) for doc in docs]


def search_body(question: Question, suffix: str, pool_size: int) -> dict[str, Any]:
    """What each training question asks: hybrid, explained, not re-ranked."""
    return {
        "query": question.text,
        "k": pool_size,
        "user_id": question.scope + suffix,
        "mode": "hybrid",
        "explain": True,
        "rerank": "none",
    }
