"""The learned re-ranker: candidate features, the shipped model, its training script."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import ranker_data, train_ranker
from memory_service.memories.models import Memory, SearchHit
from memory_service.retrieval.features import (
    FEATURES,
    QueryTerms,
    candidate_features,
    terms,
)
from memory_service.retrieval.ranker import LearnedRanker
from memory_service.retrieval.temporal import parse_time_intent, prefer_time
from tests.test_retrieval import SEARCH

NOW = datetime(2026, 3, 18, 12, tzinfo=UTC)


def memory(content: str, seq: int, **metadata: Any) -> Memory:
    return Memory(
        id=f"m{seq}",
        content=content,
        user_id="u",
        agent_id=None,
        run_id=None,
        namespace=None,
        metadata=metadata,
        importance=0.5,
        created_at=NOW,
        updated_at=NOW,
        expires_at=None,
        version=1,
        seq=seq,
    )


def pool() -> list[SearchHit]:
    """A fused pool as hybrid leaves it: vector and keyword shares in the components."""
    rows = [
        ("Caroline: I went to the pottery class on Saturday", 0.5, 0.35),
        ("Melanie: That sounds lovely, what did you make?", 0.3, 0.0),
        ("Caroline: A bowl for my dog's water", 0.25, 0.1),
        ("Melanie: I prefer painting landscapes myself", 0.05, 0.0),
    ]
    hits = [
        SearchHit(memory(text, 10 + i), v + k, {"vector": v, "keyword": k})
        for i, (text, v, k) in enumerate(rows)
    ]
    return sorted(hits, key=lambda h: -h.score)


def test_features_are_relative_to_the_pool() -> None:
    hits = pool()
    x = candidate_features("When did Caroline go to the pottery class?", hits)
    assert x.shape == (4, len(FEATURES))
    col = {name: x[:, j] for j, name in enumerate(FEATURES)}
    assert col["fused"][0] == 1.0 and col["vector"][0] == 1.0 and col["keyword"][0] == 1.0
    assert list(col["fused_rank"]) == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    reply = [h.memory.content for h in hits].index("Melanie: That sounds lovely, what did you make?")
    # no shared word on the keyword side: no keyword rank, flagged missing
    assert col["keyword_rank"][reply] == 0.0 and col["keyword_missing"][reply] == 1.0
    # "caroline", "go", "pottery", "class": the first turn holds three of the four
    assert col["coverage"][0] == pytest.approx(3 / 4)
    # the turn after the best one has it as a neighbour; the best one's best neighbour
    # within two writes is the bowl (seq 12), not the far preference (seq 13)
    bowl = [h.memory.seq for h in hits].index(12)
    assert col["neighbour"][reply] == 1.0
    assert col["neighbour"][0] == pytest.approx(col["fused"][bowl])
    assert not col["time"].any() and not col["context"].any()
    assert terms("The classes I went to") == ["class", "went"]


# words that stem, words that are stop words, digits, joiners that are word characters
# to the regex engine but not to the tokenizer, upper case and non-ASCII letters
WORDS = st.sampled_from(
    ["class", "classes", "clas", "runs", "running", "run", "ran", "the", "is", "an", "ands",
     "bless", "makes", "make", "mak", "quickly", "quick", "cells", "cell", "t1", "2023",
     "x_y", "İstanbul", "CELLS", "Running", "naïve", "ed", "es", "ing", "s"]
)  # fmt: skip
TEXT = st.lists(
    st.tuples(WORDS, st.sampled_from([" ", "_", "-", ".", "", "é", "\n", "1"])), max_size=30
).map(lambda parts: "".join(w + sep for w, sep in parts))


@settings(max_examples=400, deadline=None)
@given(TEXT, TEXT)
def test_the_query_terms_a_text_holds_are_those_its_words_stem_to(query: str, text: str) -> None:
    """The one-expression scan finds exactly what stemming every word would."""
    wanted = set(terms(query))
    assert QueryTerms(wanted).found_in(text) == wanted & set(terms(text))


def test_shipped_model_scores_deterministically_and_explains_its_score() -> None:
    ranker = LearnedRanker.load()
    assert ranker.features == FEATURES and len(ranker.roots) > 0
    query = "When did Caroline go to the pottery class?"
    first = [(h.memory.id, h.score) for h in ranker.rerank(query, pool())]
    again = [(h.memory.id, h.score) for h in ranker.rerank(query, pool())]
    assert first == again
    for hit in ranker.rerank(query, pool()):
        # the shares and the bias add up to the log-odds; the score is its probability
        assert hit.components is not None and set(hit.components) == {*FEATURES, "bias"}
        logit = sum(hit.components.values())
        assert hit.score == pytest.approx(1.0 / (1.0 + math.exp(-logit)), abs=1e-9)
    # without explain: the same scores, from the leaves alone
    quick = [(h.memory.id, h.score) for h in ranker.rerank(query, pool(), explain=False)]
    assert [i for i, _ in quick] == [i for i, _ in first]
    assert [s for _, s in quick] == pytest.approx([s for _, s in first], abs=1e-12)
    # the best match on every signal stays first
    assert first[0][0] == "m10"


def test_tree_walk_matches_a_hand_computed_tree() -> None:
    # one stump on "fused": <= 0.5 goes left (value -1), else right (value 3); root 0
    raw = {
        "features": list(FEATURES),
        "rate": 0.5,
        "bias": 0.25,
        "trees": [
            {
                "feature": [0, -2, -2],
                "threshold": [0.5, -2.0, -2.0],
                "left": [1, -1, -1],
                "right": [2, -1, -1],
                "value": [0.0, -1.0, 3.0],
                "depth": 1,
            }
        ],
    }
    ranker = LearnedRanker.from_dict(raw)
    x = np.zeros((2, len(FEATURES)))
    x[1, 0] = 0.9
    shares = ranker.contributions(x)
    assert shares[:, 0].tolist() == [-0.5, 1.5] and not shares[:, 1:].any()
    assert ranker.scores(x).tolist() == [-0.25, 1.75]
    with pytest.raises(ValueError, match="unknown features"):
        LearnedRanker.from_dict({**raw, "features": ["nonsense"]})
    with pytest.raises(ValueError, match="finite"):
        LearnedRanker.from_dict({**raw, "bias": float("nan")})


def tiny_data(root: Path) -> None:
    """SciFact and LoCoMo in their own formats, a few documents and questions each."""
    sci = root / "scifact"
    (sci / "qrels").mkdir(parents=True)
    abstracts = [
        ("Aspirin and heart attacks", "Daily aspirin lowers the risk of myocardial infarction."),
        ("Vitamin D and bones", "Vitamin D supplements improve bone density in the elderly."),
        ("Sleep and memory", "Sleep consolidates memory in the hippocampus."),
        ("Coffee and the liver", "Coffee drinking is linked to less liver fibrosis."),
        ("Exercise and mood", "Aerobic exercise reduces symptoms of depression."),
    ]
    with open(sci / "corpus.jsonl", "w") as f:
        for i, (title, text) in enumerate(abstracts):
            f.write(json.dumps({"_id": str(i), "title": title, "text": text}) + "\n")
    claims = ["Aspirin prevents heart attacks", "Sleep helps memory", "Coffee protects the liver"]
    with open(sci / "queries.jsonl", "w") as f:
        for i, claim in enumerate(claims):
            f.write(json.dumps({"_id": f"q{i}", "text": claim}) + "\n")
    (sci / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq0\t0\t1\nq1\t2\t1\nq2\t3\t1\n"
    )
    turns = [
        ("Anna", "I adopted a grey cat named Pixel last week"),
        ("Ben", "That is lovely, my dog would chase it"),
        ("Anna", "I started a pottery class on Tuesdays"),
        ("Ben", "I prefer hiking in the mountains on weekends"),
    ]
    conversation = {
        "speaker_a": "Anna",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": s, "text": t, "dia_id": f"D1:{i + 1}"} for i, (s, t) in enumerate(turns)
        ],
    }
    qa = [
        {"question": "What is the name of Anna's cat?", "evidence": ["D1:1"], "category": 4},
        {"question": "What does Ben do on weekends?", "evidence": ["D1:4"], "category": 4},
    ]
    (root / "locomo").mkdir()
    (root / "locomo" / "locomo10.json").write_text(
        json.dumps([{"sample_id": "c0", "conversation": conversation, "qa": qa}])
    )


async def test_training_script_runs_on_a_slice(
    client: Any, tenant: dict[str, Any], tmp_path: Path
) -> None:
    """The script's own steps, the service's answers from the real app: load each set,
    ask its questions, then fit and write the model from the saved answers."""
    tiny_data(tmp_path / "data")
    sets = ranker_data.training_sets(tmp_path / "data", None)
    h = tenant["headers"]
    answers = []
    for _, docs, questions, suffix in sets:
        items = ranker_data.items_for(ranker_data.unique_documents(docs), suffix)
        r = await client.post("/v1/memories/batch", json={"items": items}, headers=h)
        assert r.status_code == 201, r.text
        per_question = []
        for q in questions:
            r = await client.post(SEARCH, json=ranker_data.search_body(q, suffix, 20), headers=h)
            assert r.status_code == 200, r.text
            per_question.append([ranker_data.record(hit) for hit in r.json()["results"]])
        answers.append(per_question)
    saved = tmp_path / "answers.json.gz"
    saved.write_bytes(gzip.compress(json.dumps(answers).encode()))
    out = tmp_path / "ranker.json"
    argv = ["--data", str(tmp_path / "data"), "--answers", str(saved), "--out", str(out)]
    assert train_ranker.main([*argv, "--configs", "10:2:0.3,5:1:0.5"]) == 0
    model = LearnedRanker.load(out)
    assert model.about["questions"] == 7 and len(model.roots) in (5, 10)
    # the fitted model ranks the slice's own evidence first for a question it saw
    pools = train_ranker.pools_from(sets, answers)
    cat = next(p for p in pools if p.question.text.startswith("What is the name"))
    assert cat.ids[int(np.argmax(model.scores(cat.x)))] == "D1:1"


# whatever a pool holds (any text, metadata that is not an object or holds odd times,
# runs or none, shares missing, zero or tied), the default's second stage answers
CONTENT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=80)
METADATA = st.one_of(
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(
        st.sampled_from(["date", "event_time", "time", "timestamp", "session"]),
        st.one_of(st.text(max_size=20), st.integers(), st.sampled_from(["2023-05-20", "8 May, 2023"])),
        max_size=2,
    ),
)
SHARES = st.dictionaries(
    st.sampled_from(["vector", "keyword", "time", "context"]),
    st.floats(0.0, 2.0, allow_nan=False),
    max_size=4,
)
HITS = st.lists(
    st.tuples(CONTENT, METADATA, st.sampled_from([None, "r1", "r2"]), SHARES), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), HITS, st.booleans())
def test_the_ranker_scores_any_pool_as_probabilities_in_order(
    query: str, rows: list[tuple[str, Any, str | None, dict[str, float]]], explain: bool
) -> None:
    ranker = LearnedRanker.load()
    hits = []
    for i, (content, metadata, run, shares) in enumerate(rows):
        m = memory(content, i)
        m.metadata, m.run_id = metadata, run
        hits.append(SearchHit(m, sum(shares.values()), dict(shares) or None))
    ranked = ranker.rerank(query, hits, explain=explain)
    assert sorted(h.memory.id for h in ranked) == sorted(h.memory.id for h in hits)
    scores = [h.score for h in ranked]
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)
    # and a time in the query weighs each probability with each memory's time
    intent = parse_time_intent("what happened in May 2023", NOW)
    assert intent is not None
    timed = prefer_time(ranked, intent, 0.2, as_one=True)
    assert all(0.0 <= h.score <= 1.0 for h in timed)
    assert [h.score for h in timed] == sorted((h.score for h in timed), reverse=True)
