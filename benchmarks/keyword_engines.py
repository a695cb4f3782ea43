"""In-process BM25 engines side by side: ``tantivy`` against ``bm25s`` on SciFact.

Both index the same SciFact abstracts with English stemming and stop words, then
answer every test query; reported per engine: index build seconds, single-query
p50/p99 (the shape of a search request: one query, top 10), nDCG@10 against the
SciFact relevance judgements, and the cost of adding 100 documents to a built
index (what following the change log asks of it). One run, same process.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
K = 10


def read(data: Path) -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, set[str]]]:
    corpus = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open()]
    ids = [str(d["_id"]) for d in corpus]
    docs = [f"{d.get('title', '')}. {d['text']}" for d in corpus]
    qrels: dict[str, set[str]] = {}
    for line in list((data / "scifact" / "qrels" / "test.tsv").open())[1:]:
        qid, cid, _ = line.strip().split("\t")
        qrels.setdefault(qid, set()).add(cid)
    queries = [
        (str(q["_id"]), q["text"])
        for q in map(json.loads, (data / "scifact" / "queries.jsonl").open())
        if str(q["_id"]) in qrels
    ]
    return ids, docs, queries, qrels


def ndcg(ranked: list[str], relevant: set[str]) -> float:
    gain = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:K]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(K, len(relevant))))
    return gain / ideal


class Tantivy:
    name = "tantivy"

    def __init__(self) -> None:
        import tantivy

        self.t = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("doc", stored=True, indexed=True, fast=True)
        builder.add_text_field("body", tokenizer_name="en_stem")
        self.schema = builder.build()
        self.dir = tempfile.mkdtemp(prefix="tantivy-bench-")
        self.index = tantivy.Index(self.schema, path=self.dir)

    def add(self, start: int, docs: list[str]) -> None:
        writer = self.index.writer(heap_size=50_000_000, num_threads=1)
        for i, text in enumerate(docs, start):
            writer.add_document(self.t.Document(doc=i, body=text))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()

    def search(self, text: str) -> list[int]:
        searcher = self.index.searcher()
        query, _ = self.index.parse_query_lenient(text, ["body"])  # user text, not syntax
        hits = searcher.search(query, K).hits
        return [searcher.doc(address)["doc"][0] for _, address in hits]


class Bm25s:
    name = "bm25s"

    def __init__(self) -> None:
        import bm25s
        import Stemmer

        self.bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.docs: list[str] = []
        self.model: Any = None

    def add(self, start: int, docs: list[str]) -> None:
        # bm25s precomputes a score matrix: adding documents means indexing again
        self.docs.extend(docs)
        tokens = self.bm25s.tokenize(
            self.docs, stopwords="en", stemmer=self.stemmer, show_progress=False
        )
        self.model = self.bm25s.BM25()
        self.model.index(tokens, show_progress=False)

    def search(self, text: str) -> list[int]:
        tokens = self.bm25s.tokenize(
            [text], stopwords="en", stemmer=self.stemmer, show_progress=False
        )
        found, _ = self.model.retrieve(tokens, k=K, show_progress=False, n_threads=1)
        return [int(i) for i in found[0]]


def measure(engine: Any, ids: list[str], docs: list[str], queries: list, qrels: dict) -> dict:
    started = time.perf_counter()
    engine.add(0, docs[:-100])
    build = time.perf_counter() - started
    started = time.perf_counter()
    engine.add(len(docs) - 100, docs[-100:])
    add_100 = time.perf_counter() - started
    times, scores = [], []
    for qid, text in tqdm(queries, desc=engine.name, unit="query"):
        t0 = time.perf_counter()
        found = engine.search(text)
        times.append((time.perf_counter() - t0) * 1000)
        scores.append(ndcg([ids[i] for i in found], qrels[qid]))
    return {
        "docs": len(docs),
        "build_s": round(build, 3),
        "add_100_docs_s": round(add_100, 4),
        "query_p50_ms": round(float(np.percentile(times, 50)), 3),
        "query_p99_ms": round(float(np.percentile(times, 99)), 3),
        "ndcg_at_10": round(float(np.mean(scores)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    ids, docs, queries, qrels = read(Path(args.data))
    engines: list[Callable[[], Any]] = [Tantivy, Bm25s]
    report = {e.name: measure(e(), ids, docs, queries, qrels) for e in engines}  # type: ignore[attr-defined]
    out = ROOT / "benchmarks" / "results" / "keyword_engines.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
