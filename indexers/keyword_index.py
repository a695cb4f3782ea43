"""An in-process BM25 keyword index over ``tantivy``, shaped like PostgreSQL full-text search.

Each document (an int64 id and its text) is indexed in two fields, as the
SQL path's two ``tsvector`` columns are: ``english`` (lower-cased words, the
Snowball English stop words that PostgreSQL's 'english' configuration drops,
Snowball English stemming) and ``simple`` (lower-cased words only). A query
matches a document holding any of its terms and ranks it by BM25 (tantivy's
k1 = 1.2, b = 0.75) summed over both fields, the ``simple`` field weighted by
``simple_weight``; like the SQL path, a query word that is an English stop
word is left out of both fields. A search restricted to a set of ids weighs each
term by its document frequency within that set, as the SQL path does within a
scope (the mean document length stays the index's). Writes land in one commit
per call and are searchable when the call returns; searches read an immutable
searcher, so a search may run while another thread writes. The index is held in
memory only: it is rebuilt from the rows that feed it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
import tantivy

# PostgreSQL's tsearch_data/english.stop (the Snowball English list)
_ENGLISH_STOP_TEXT = (
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his "
    "himself she her hers herself it its itself they them their theirs themselves what which "
    "who whom this that these those am is are was were be been being have has had having do "
    "does did doing a an the and but if or because as until while of at by for with about "
    "against between into through during before after above below to from up down in out on "
    "off over under again further then once here there when where why how all any both each "
    "few more most other some such no nor not only own same so than too very s t can will "
    "just don should now"
)
ENGLISH_STOP_WORDS = tuple(_ENGLISH_STOP_TEXT.split())
K1, B = 1.2, 0.75  # tantivy's BM25 constants
PROBE_TERMS_MAX = 24  # query terms whose in-scope frequencies one probe can tell apart
WRITER_HEAP_BYTES = 15_000_000  # tantivy's smallest writer arena; a writer lives per write
# what a document costs in memory beyond its text (postings, norms, doc store), measured
# on SciFact abstracts: about twice the text plus a small fixed part
DOC_OVERHEAD_BYTES = 64
INDEX_OVERHEAD_BYTES = 256 * 1024

_ENGLISH = "kw_english"
_SIMPLE = "kw_simple"


def _idf(docs: int, with_term: int) -> float:
    """BM25's inverse document frequency (tantivy's and the SQL path's formula)."""
    return math.log(1.0 + (max(docs, with_term) - with_term + 0.5) / (with_term + 0.5))


def _analyzers() -> tuple[Any, Any]:
    words = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    english = (
        words.filter(tantivy.Filter.remove_long(255))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.custom_stopword(list(ENGLISH_STOP_WORDS)))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )
    simple = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(255))
        .filter(tantivy.Filter.lowercase())
        .build()
    )
    return english, simple


class KeywordIndex:
    """BM25 over int64 ids. ``upsert`` of an existing id replaces its text."""

    def __init__(self, simple_weight: float = 0.5) -> None:
        self.simple_weight = simple_weight
        self._english, self._simple = _analyzers()
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("id", stored=True, indexed=True, fast=True)
        builder.add_text_field("english", tokenizer_name=_ENGLISH, stored=False)
        builder.add_text_field("simple", tokenizer_name=_SIMPLE, stored=False)
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema)
        self._index.register_tokenizer(_ENGLISH, self._english)
        self._index.register_tokenizer(_SIMPLE, self._simple)
        self._searcher = self._index.searcher()
        self._write_lock = threading.Lock()
        self._text_bytes: dict[int, int] = {}

    @property
    def size(self) -> int:
        return len(self._text_bytes)

    def contains(self, doc_id: int) -> bool:
        return doc_id in self._text_bytes

    def memory_bytes(self) -> int:
        """An estimate of what the index holds (counted in the memory budget)."""
        text = sum(self._text_bytes.values())
        return INDEX_OVERHEAD_BYTES + 2 * text + DOC_OVERHEAD_BYTES * len(self._text_bytes)

    # -- writes ----------------------------------------------------------------------------
    def apply(self, upserts: Sequence[tuple[int, str]], removed: Iterable[int] = ()) -> None:
        """Replace or add ``upserts`` and drop ``removed`` in one commit."""
        gone = [i for i in removed if i in self._text_bytes]
        if not upserts and not gone:
            return
        sizes = [len(text.encode()) for _, text in upserts]  # text that is not UTF-8 stops here
        with self._write_lock:
            writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
            try:
                for doc_id in [*gone, *(i for i, _ in upserts if i in self._text_bytes)]:
                    writer.delete_documents_by_term("id", doc_id)
                for doc_id, text in upserts:
                    writer.add_document(tantivy.Document(id=doc_id, english=text, simple=text))
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                # frees the writer's arena and the index's writer lock now, not when the
                # object is collected (a failed call's traceback would keep it alive)
                writer.wait_merging_threads()
            self._index.reload()
            self._searcher = self._index.searcher()
            for doc_id in gone:
                self._text_bytes.pop(doc_id, None)
            for (doc_id, _), size in zip(upserts, sizes, strict=True):
                self._text_bytes[doc_id] = size

    def vocabulary(self, prefix: str) -> set[str]:
        """The indexed words (of both fields) that begin with ``prefix``: also those of
        deleted documents, which stay in a segment until tantivy merges it."""
        searcher = self._searcher
        return {
            term
            for field in ("english", "simple")
            for term, _ in searcher.terms_with_prefix(field, prefix)
        }

    # -- search ----------------------------------------------------------------------------
    def terms(self, text: str) -> tuple[list[str], list[str]]:
        """The query's terms in the ``english`` and the ``simple`` field."""
        english = list(dict.fromkeys(self._english.analyze(text)))
        simple = [w for w in dict.fromkeys(self._simple.analyze(text)) if self._english.analyze(w)]
        return english, simple

    def search(
        self, text: str, limit: int, allow: Collection[int] | None = None
    ) -> tuple[list[tuple[int, float]], int]:
        """The best ``limit`` (id, BM25) pairs matching any query term, best first (ties by
        id), and how many documents match in all; ``allow`` restricts the ids."""
        english, simple = self.terms(text)
        terms = [("english", w, 1.0) for w in english]
        terms += [("simple", w, self.simple_weight) for w in simple]
        if not terms or limit <= 0:
            return [], 0
        searcher = self._searcher
        if allow is None:
            query = tantivy.Query.boolean_query([self._term(*term) for term in terms])
        else:
            if not allow:
                return [], 0
            # the id set only restricts: a constant 0 keeps it out of the scores
            only = tantivy.Query.const_score_query(
                tantivy.Query.term_set_query(self._schema, "id", list(allow)), 0.0
            )
            inside = sum(1 for doc_id in allow if doc_id in self._text_bytes)
            weighted = self._within(searcher, terms, only, inside)
            query = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, tantivy.Query.boolean_query(weighted)),
                    (tantivy.Occur.Must, only),
                ]
            )
        found = searcher.search(query, limit, count=True)
        # the ids from the fast field (a column read), not from each stored document
        ids: list[Any] = searcher.fast_field_values("id", [address for _, address in found.hits])
        hits = [(int(i), float(score)) for i, (score, _) in zip(ids, found.hits, strict=True)]
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        # ``count`` is typed in tantivy's stubs only from 0.27 on
        return hits, int(getattr(found, "count", None) or 0)

    def _within(
        self, searcher: Any, terms: list[tuple[str, str, float]], only: Any, inside: int
    ) -> list[tuple[Any, Any]]:
        """Term clauses whose BM25 weights use document frequencies among the allowed ids,
        as the SQL path takes them from the rows in scope: each term's boost is its
        inverse document frequency there over the one tantivy computes for the index.

        One probe finds them all: term ``i`` scores a constant ``2**i``, so each allowed
        document's score is the bit set of the terms it holds (exact in float32 up to 24
        terms; a longer query keeps the index's frequencies)."""
        if len(terms) > PROBE_TERMS_MAX or inside <= 0:
            return [self._term(*term) for term in terms]
        probes = [
            (
                tantivy.Occur.Should,
                tantivy.Query.const_score_query(self._query(f, w), float(1 << i)),
            )
            for i, (f, w, _) in enumerate(terms)
        ]
        probe = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, tantivy.Query.boolean_query(probes)), (tantivy.Occur.Must, only)]
        )
        scores = [score for score, _ in searcher.search(probe, inside).hits]
        bits = np.rint(np.asarray(scores, dtype=np.float64)).astype(np.int64)
        df_inside = ((bits[:, None] >> np.arange(len(terms))) & 1).sum(axis=0)
        total = max(1, searcher.num_docs)
        weighted = []
        for (field, word, boost), df in zip(terms, df_inside.tolist(), strict=True):
            df_all = max(df, searcher.doc_freq(field, word))
            scale = _idf(inside, df) / _idf(total, df_all) if df and df_all else 1.0
            weighted.append(self._term(field, word, boost * scale))
        return weighted

    def _query(self, field: str, word: str) -> Any:
        return tantivy.Query.term_query(self._schema, field, word)

    def _term(self, field: str, word: str, boost: float) -> tuple[Any, Any]:
        query = self._query(field, word)
        if boost != 1.0:
            query = tantivy.Query.boost_query(query, boost)
        return tantivy.Occur.Should, query
