"""Public retrieval benchmarks read from disk: BEIR SciFact and LoCoMo.

Each loader turns its files into documents (what is stored as memories) and
questions (what is asked, with the ids of the documents that answer it). Nothing
is copied into the repository; the data directory is passed in.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Document:
    doc_id: str
    content: str
    scope: str  # user_id the document is stored under
    metadata: dict[str, Any] = field(default_factory=dict)
    context: str | None = None


@dataclass(slots=True)
class Question:
    text: str
    scope: str
    relevant: dict[str, int]  # doc_id -> graded relevance
    category: str = "all"


LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def load_scifact(root: Path, split: str = "test") -> tuple[list[Document], list[Question]]:
    """SciFact's ``split`` (test, or train to fit a ranker on); a document is
    ``"<title> <abstract>"`` as in BEIR's own runs."""
    base = root / "scifact"
    docs = []
    with open(base / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = f"{row['title']} {row['text']}".strip()
            docs.append(Document(str(row["_id"]), text, "scifact", {"doc_id": str(row["_id"])}))
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(base / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, cid, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels[qid][cid] = int(score)
    questions = []
    with open(base / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                questions.append(Question(row["text"], "scifact", qrels[str(row["_id"])]))
    return docs, questions


def _turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo of {turn['blip_caption']}]"
    return text


def load_locomo(root: Path, *, context: str = "none") -> tuple[list[Document], list[Question]]:
    """LoCoMo dialogue turns, one conversation per user_id; adversarial questions left out.

    ``context`` picks what is sent as each memory's ``context`` field (indexed for
    search with the content, see the README): ``none``; ``date`` (the session's
    date); ``date+previous`` (the date and the previous turn of the session).
    """
    data = json.loads((root / "locomo" / "locomo10.json").read_text(encoding="utf-8"))
    docs: list[Document] = []
    questions: list[Question] = []
    for conv in data:
        scope = f"locomo-{conv['sample_id']}"
        talk = conv["conversation"]
        sessions = sorted(
            (int(k.split("_")[1]), k)
            for k in talk
            if k.startswith("session_") and not k.endswith("date_time")
        )
        for number, key in sessions:
            date = talk.get(f"{key}_date_time", "")
            previous: str | None = None
            for turn in talk[key]:
                content = _turn_text(turn)
                parts = []
                if context in ("date", "date+previous") and date:
                    parts.append(f"({date})")
                if context == "date+previous" and previous:
                    parts.append(previous)
                docs.append(
                    Document(
                        turn["dia_id"],
                        content,
                        scope,
                        {
                            "speaker": turn["speaker"],
                            "session": number,
                            "date": date,
                            "dia_id": turn["dia_id"],
                        },
                        " ".join(parts) or None,
                    )
                )
                previous = content
        for qa in conv["qa"]:
            category = int(qa.get("category", 0))
            if category not in LOCOMO_CATEGORIES or not qa.get("evidence"):
                continue
            relevant = {str(e).strip(): 1 for e in qa["evidence"]}
            questions.append(
                Question(str(qa["question"]), scope, relevant, LOCOMO_CATEGORIES[category])
            )
    return docs, questions
