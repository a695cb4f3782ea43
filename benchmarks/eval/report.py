"""The Markdown report of ``make eval``: a table per data set, each run against the baselines.

Reads the results dictionary ``eval_retrieval`` writes as ``retrieval.json``
and lays it out as ``retrieval.md``: SciFact nDCG and recall, LoCoMo evidence
recall per context variant, dev and test halves and category, each with the
paired bootstrap test against every baseline and the service's latency.
"""

from __future__ import annotations

from typing import Any

from benchmarks.eval.runs import BASELINES, LOCOMO_DEV


def versus(row: dict[str, Any], key: str = "vs", baselines: Any = BASELINES) -> str:
    cells = []
    for base in baselines:
        test = row.get(key, {}).get(base)
        cells.append("" if test is None else f"{test['delta']:+.3f} (p={test['p']:.3f})")
    return " | ".join(cells)


def markdown(results: dict[str, Any]) -> str:
    baselines = tuple(results.get("baselines", BASELINES))
    lines = [
        "# Retrieval quality",
        "",
        (
            f"all-MiniLM-L6-v2 ({results.get('backend', 'torch')} backend), measured through "
            f"the HTTP API on {results['machine']} "
            f"({results['date']}, {results['seconds']:.0f} s in all, load average "
            f"{results.get('load', '?')}): `python -m benchmarks.eval_retrieval`. "
            f"The default run is what a search with no mode and no option gets "
            f"({results.get('default mode', '?')}). Latency is the service's own `took_ms`, "
            "query embedding included (its cache off, so every run embeds its queries)."
        ),
        "",
    ]
    if "scifact" in results:
        s = results["scifact"]
        lines += [
            f"## BEIR SciFact ({s['documents']} abstracts, {s['queries']} test queries)",
            "",
            (
                "nDCG@10 difference against each baseline, query by query, with its paired "
                "bootstrap p-value."
            ),
            "",
            "| run | nDCG@10 | recall@10 | recall@100 | "
            + " | ".join(f"vs {b}" for b in baselines)
            + " | p50 ms | p95 ms |",
            "|---|---:|---:|---:|" + "---:|" * len(baselines) + "---:|---:|",
        ]
        for name, row in s["runs"].items():
            lines.append(
                f"| {name} | {row['ndcg@10']:.3f} | {row['recall@10']:.3f} | "
                f"{row['recall@100']:.3f} | {versus(row, baselines=baselines)} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} |"
            )
        lines.append("")
    if "locomo" in results:
        lo = results["locomo"]
        cats = list(lo["questions by category"])
        counts = ", ".join(f"{c} {n}" for c, n in lo["questions by category"].items())
        lines += [
            f"## LoCoMo ({lo['documents']} dialogue turns, {lo['questions']} questions: {counts})",
            "",
            (
                "Evidence recall; `context` is what each memory carried in its `context` field. "
                f"Settings were chosen on conversations 0-{LOCOMO_DEV - 1} (dev); "
                f"{LOCOMO_DEV}-9 (test) were not looked at (the learned ranker was trained on "
                f"0-{LOCOMO_DEV - 1} only). The vs columns: R@10 difference against each "
                "baseline, query by query, with its paired bootstrap p-value; test vs: the "
                "same over the test conversations alone."
            ),
            "",
            "| context | run | R@5 | R@10 | R@25 | R@10 dev | R@10 test | "
            + " | ".join(f"R@10 {c}" for c in cats)
            + " | "
            + " | ".join(f"vs {b}" for b in baselines)
            + " | "
            + " | ".join(f"test vs {b}" for b in baselines)
            + " | p50 ms | p95 ms |",
            "|---|---|---:|---:|---:|---:|---:|"
            + "---:|" * (len(cats) + 2 * len(baselines))
            + "---:|---:|",
        ]
        for context, block in lo["contexts"].items():
            for name, row in block["runs"].items():
                per = " | ".join(f"{row['recall@10 by category'].get(c, 0.0):.3f}" for c in cats)
                lines.append(
                    f"| {context} | {name} | {row['recall@5']:.3f} | {row['recall@10']:.3f} | "
                    f"{row['recall@25']:.3f} | {row['recall@10 dev']:.3f} | "
                    f"{row['recall@10 test']:.3f} | {per} | {versus(row, baselines=baselines)} | "
                    f"{versus(row, 'vs test', baselines)} | "
                    f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)
