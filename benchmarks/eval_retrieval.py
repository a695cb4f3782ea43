"""Retrieval quality on public benchmarks, measured through the service's HTTP API.

``make eval`` starts the real service (uvicorn on 127.0.0.1, a temporary data
directory, its own admin token, the service's default embedding: ONNX with int8
weights; ``--backend torch`` or ``--no-quantize`` for the others), loads each data set through ``POST
/v1/memories/batch`` (document vectors computed once and cached on disk under
``benchmarks/.cache/``, sent in the ``embedding`` field), asks every question
through ``POST /v1/memories/search`` in each mode and scoring option, and writes
``benchmarks/results/retrieval.json`` and ``retrieval.md``.

- BEIR SciFact (5,183 abstracts, 300 test queries; a document is "title text"):
  nDCG@10, recall@10, recall@100.
- LoCoMo (10 conversations, one user_id each; a memory per dialogue turn as
  "speaker: text", speaker, session and date in metadata; adversarial questions
  left out): evidence recall@5/@10/@25, overall and per category. Turns are
  loaded once per context variant, in its own user_id, to compare what the
  general ``context`` field adds.

The ``hybrid + cross`` run re-ranks with the cross-encoder of ``make
train-cross-encoder`` (``--cross-encoder``, default ``benchmarks/.cache/cross-encoder``)
and is left out, with a line saying so, when there is none. ``--baselines`` picks the
runs every run is compared with query by query, ``--workers 1`` asks one question at
a time (latencies that compare, without searches queueing behind each other).

The data directory is ``--data``, else ``$MEMORY_EVAL_DATA``, else
``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.eval.datasets import Document, Question, load_locomo, load_scifact
from benchmarks.eval.embed_cache import EmbeddingCache
from benchmarks.eval.metrics import ndcg_at, paired_bootstrap, recall_at
from benchmarks.eval.report import markdown
from benchmarks.eval.runs import BASELINES, LOCOMO_CONTEXTS, LOCOMO_DEV, ONLY, RUNS
from benchmarks.eval.runs import CROSS_ENCODER_DIR as CROSS_ENCODER
from benchmarks.eval.service import RunningService, TenantClient

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
BATCH = 1000
# what each run is compared with, query by query (--baselines)
COMPARED: list[str] = list(BASELINES)
WORKERS = [4]  # searches in flight at once (--workers)

def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def embed_text(doc: Document) -> str:
    """What the service would embed: the content, then the context (see MemoryService)."""
    return doc.content + ("\n" + doc.context if doc.context else "")


def memory_item(doc: Document, suffix: str = "") -> dict[str, Any]:
    """A document as a user would store it: its scope as ``user_id``, a conversation's
    session as its ``run_id``, the document id in metadata."""
    item: dict[str, Any] = {
        "content": doc.content,
        "user_id": doc.scope + suffix,
        "metadata": {**doc.metadata, "doc_id": doc.doc_id},
    }
    if doc.context:
        item["context"] = doc.context
    if "session" in doc.metadata:
        item["run_id"] = f"{doc.scope}{suffix}-s{doc.metadata['session']}"
    return item


def load_documents(
    client: TenantClient, cache: EmbeddingCache, docs: list[Document], label: str, suffix: str = ""
) -> None:
    vectors = cache.embed([embed_text(d) for d in docs], label=f"embed {label}")
    bar = tqdm(total=len(docs), desc=f"load {label}", unit="memory")
    for start in range(0, len(docs), BATCH):
        items = []
        for doc, vector in zip(
            docs[start : start + BATCH], vectors[start : start + BATCH], strict=True
        ):
            items.append({**memory_item(doc, suffix), "embedding": [float(x) for x in vector]})
        client.add_batch(items)
        bar.update(len(items))
    bar.close()


def ask_all(
    client: TenantClient,
    questions: list[Question],
    body: dict[str, Any],
    k: int,
    label: str,
    suffix: str = "",
    workers: int | None = None,
) -> tuple[list[list[str]], list[float]]:
    def ask(q: Question) -> tuple[list[str], float]:
        answer = client.search({"query": q.text, "k": k, "user_id": q.scope + suffix, **body})
        ids = [hit["memory"]["metadata"]["doc_id"] for hit in answer["results"]]
        return ids, float(answer["took_ms"])

    with ThreadPoolExecutor(workers or WORKERS[0]) as pool:
        out = list(tqdm(pool.map(ask, questions), total=len(questions), desc=label, unit="q"))
    return [ids for ids, _ in out], [ms for _, ms in out]


def eval_scifact(service: RunningService, cache: EmbeddingCache, data: Path) -> dict[str, Any]:
    docs, questions = load_scifact(data)
    client = service.new_tenant("eval-scifact")
    load_documents(client, cache, docs, "scifact")
    rows: dict[str, Any] = {}
    per_query: dict[str, list[float]] = {}
    for name, body in RUNS.items():
        if ONLY.get(name, "scifact") != "scifact":
            continue
        ranked, took = ask_all(client, questions, body, 100, f"scifact {name}")
        per_query[name] = [
            ndcg_at(r, q.relevant, 10) for r, q in zip(ranked, questions, strict=True)
        ]
        rows[name] = {
            "ndcg@10": statistics.fmean(per_query[name]),
            "recall@10": statistics.fmean(
                recall_at(r, q.relevant, 10) for r, q in zip(ranked, questions, strict=True)
            ),
            "recall@100": statistics.fmean(
                recall_at(r, q.relevant, 100) for r, q in zip(ranked, questions, strict=True)
            ),
            **latency(took),
        }
    compare(rows, per_query)
    return {"documents": len(docs), "queries": len(questions), "runs": rows}


def latency(took: list[float]) -> dict[str, float]:
    """The service's own time per search (``took_ms``), median and 95th percentile."""
    ordered = sorted(took)
    return {"p50_ms": statistics.median(ordered), "p95_ms": ordered[int(0.95 * (len(ordered) - 1))]}


def compare(rows: dict[str, Any], per_query: dict[str, list[float]], key: str = "vs") -> None:
    """Each run against each baseline: mean difference of the per-query metric, p-value."""
    for name, values in per_query.items():
        rows[name][key] = {
            base: dict(zip(("delta", "p"), paired_bootstrap(values, per_query[base]), strict=True))
            for base in COMPARED
            if base in per_query and base != name
        }


def eval_locomo(
    service: RunningService, cache: EmbeddingCache, data: Path, contexts: list[str]
) -> dict[str, Any]:
    client = service.new_tenant("eval-locomo")
    out: dict[str, Any] = {"contexts": {}}
    for context in contexts:
        docs, questions = load_locomo(data, context=context)
        suffix = f"/{context}"
        load_documents(client, cache, docs, f"locomo context={context}", suffix)
        conversations = list(dict.fromkeys(q.scope for q in questions))
        dev = set(conversations[:LOCOMO_DEV])
        rows: dict[str, Any] = {}
        per_query: dict[str, list[float]] = {}
        per_test_query: dict[str, list[float]] = {}
        per_test_category: dict[str, dict[str, list[float]]] = defaultdict(dict)
        for name, body in RUNS.items():
            if ONLY.get(name, "locomo") != "locomo":
                continue
            ranked, took = ask_all(client, questions, body, 25, f"locomo {context} {name}", suffix)
            by_category: dict[str, list[float]] = defaultdict(list)
            test_category: dict[str, list[float]] = defaultdict(list)
            overall: dict[str, list[float]] = defaultdict(list)
            for r, q in zip(ranked, questions, strict=True):
                for k in (5, 10, 25):
                    value = recall_at(r, q.relevant, k)
                    overall[f"recall@{k}"].append(value)
                    if k == 10:
                        by_category[q.category].append(value)
                        overall["dev" if q.scope in dev else "test"].append(value)
                        if q.scope not in dev:
                            test_category[q.category].append(value)
            per_query[name] = overall["recall@10"]
            per_test_query[name] = overall["test"]
            for category, values in test_category.items():
                per_test_category[category][name] = values
            rows[name] = {
                **{key: statistics.fmean(v) for key, v in overall.items() if key.startswith("r")},
                "recall@10 dev": statistics.fmean(overall["dev"]),
                "recall@10 test": statistics.fmean(overall["test"]),
                "recall@10 by category": {
                    c: statistics.fmean(v) for c, v in sorted(by_category.items())
                },
                "recall@10 test by category": {
                    c: statistics.fmean(v) for c, v in sorted(test_category.items())
                },
                **latency(took),
            }
        compare(rows, per_query)
        compare(rows, per_test_query, "vs test")
        for category, per_category in per_test_category.items():
            compare(rows, per_category, f"vs test {category}")
        counts: dict[str, int] = defaultdict(int)
        for q in questions:
            counts[q.category] += 1
        out["contexts"][context] = {"runs": rows}
        out["documents"] = len(docs)
        out["questions"] = len(questions)
        out["questions by category"] = dict(sorted(counts.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("MEMORY_EVAL_DATA", ROOT.parent / "shared" / "data")),
    )
    parser.add_argument("--datasets", default="scifact,locomo")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--locomo-contexts",
        default=",".join(LOCOMO_CONTEXTS),
        help="context variants of the LoCoMo turns: none, date, date+previous",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="onnx",
        help="the embedding backend for documents and for the service's query embedding "
        "(default: the service's, onnx)",
    )
    parser.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --backend onnx: int8 weights in the export (default: on, as in the "
        "service; --no-quantize: float weights)",
    )
    parser.add_argument(
        "--float-documents",
        action="store_true",
        help="with --quantize: documents embedded by the float export, queries by the int8 "
        "one (a store written before quantisation was turned on)",
    )
    parser.add_argument(
        "--cross-encoder",
        type=Path,
        default=CROSS_ENCODER,
        help="the model of the 'hybrid + cross' run (make train-cross-encoder); the run is "
        "left out when there is none",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help="comma-separated runs every run is compared with, query by query",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="searches in flight at once (1: each search alone, for latencies to compare)",
    )
    args = parser.parse_args(argv)
    COMPARED[:] = [b.strip() for b in args.baselines.split(",") if b.strip()]
    WORKERS[0] = max(1, args.workers)
    if args.quantize and args.backend != "onnx":
        parser.error("--quantize needs --backend onnx")
    if args.quantize is None:
        args.quantize = args.backend == "onnx"
    if args.float_documents and not args.quantize:
        parser.error("--float-documents needs --quantize")
    label = f"{args.backend}-int8" if args.quantize else args.backend
    if args.float_documents:
        label += " (float documents)"
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    for name in list(RUNS):
        if name not in wanted:
            del RUNS[name]
    cross = (args.cross_encoder / "config.json").is_file()
    if not cross:
        for name in [n for n, body in RUNS.items() if body.get("rerank") == "cross"]:
            print(f"{name}: left out, no cross-encoder in {args.cross_encoder}")
            del RUNS[name]

    from memory_service.embedding.embeddings import load_embedder

    export_dir = CACHE / "onnx-export"
    embedder = load_embedder(
        None,
        backend=args.backend,
        export_dir=export_dir,
        quantize=args.quantize and not args.float_documents,
    )
    # each backend keeps its own document vectors, so a comparison embeds with both; an
    # ONNX export's vectors are kept under its folder name, which changes with the
    # weights, the quantisation and the export format, so a new export never reads the
    # vectors of an old one
    export = getattr(embedder, "model_file", None)
    label_dir = f"{args.backend}-{export.parent.name}" if export is not None else label
    cache = EmbeddingCache(CACHE / label_dir, embedder)
    started = time.monotonic()
    load_before = load_average()
    print(f"load average {load_before}")
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU box",
        "date": time.strftime("%Y-%m-%d"),
        "backend": label,
        "baselines": COMPARED,
        "workers": WORKERS[0],
    }
    service_env = {
        "MEMORY_EMBEDDING_BACKEND": args.backend,
        "MEMORY_EMBEDDING_EXPORT_DIR": str(export_dir),
        "MEMORY_EMBEDDING_QUANTIZE": "true" if args.quantize else "false",
        # every run asks the same questions: with the query-embedding cache on, only the
        # first would pay for embedding them, and the runs' latencies would not compare
        "MEMORY_QUERY_CACHE_SIZE": "0",
    }
    if cross:
        service_env["MEMORY_CROSS_ENCODER_PATH"] = str(args.cross_encoder.resolve())
    with RunningService(env=service_env) as service:
        results["default mode"] = service.default_mode()
        for name in args.datasets.split(","):
            if name == "scifact":
                results["scifact"] = eval_scifact(service, cache, args.data)
            elif name == "locomo":
                results["locomo"] = eval_locomo(
                    service, cache, args.data, args.locomo_contexts.split(",")
                )
            else:
                parser.error(f"unknown data set {name!r}")
    results["seconds"] = time.monotonic() - started
    results["load"] = f"{load_before} at the start, {load_average()} at the end"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "retrieval.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
