"""Turns a search benchmark report into JSON, a markdown table and recall-vs-latency plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _best(sweep: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    """The fastest point of a sweep that reaches ``recall``."""
    ok = [row for row in sweep if row["recall"] >= recall]
    return min(ok, key=lambda row: row["p50_ms"]) if ok else None


def summary(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    synthetic = report.get("synthetic", {})
    faiss = _best(synthetic.get("faiss", []), 0.95)
    if faiss:
        out["faiss_at_0.95"] = faiss
        pg = _best(synthetic.get("pgvector", []), faiss["recall"])
        if pg:
            out["pgvector_at_equal_recall"] = pg
            out["faiss_speedup_vs_pgvector"] = round(pg["p50_ms"] / max(faiss["p50_ms"], 1e-6), 1)
    return out


def markdown(report: dict[str, Any], size: str) -> str:
    lines = [f"### Search benchmark, {size} vectors (k={report['k']})", ""]
    lines.append(f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['note']}.")
    lines.append("")
    for label in ("synthetic", "scifact"):
        block = report.get(label)
        if not block:
            continue
        lines += [
            (
                f"**{label}** ({block.get('vectors', report['size'])} vectors): recall@10 vs exact, "
                "single-query latency in-process"
            ),
            "",
            "| path | efSearch | recall@10 | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for path in ("faiss", "pgvector"):
            for row in block.get(path, []):
                lines.append(
                    f"| {path} HNSW | {row['ef_search']} | {row['recall']:.4f} | {row['p50_ms']} "
                    f"| {row['p95_ms']} | {row['p99_ms']} |"
                )
        for path in ("exact_numpy", "exact_sql"):
            if path in block:
                row = block[path]
                lines.append(
                    f"| {path.replace('_', ' ')} | - | 1.0000 | {row['p50_ms']} | {row['p95_ms']} "
                    f"| {row['p99_ms']} |"
                )
        lines.append("")
        if "faiss_build_s" in block:
            lines.append(f"FAISS HNSW build: {block['faiss_build_s']} s.")
            lines.append("")
    rows = report.get("service_paths")
    if rows:
        lines += [
            "**Service path** (search + SQL re-check; filter = metadata equality at a selectivity)",
            "",
            "| path / filter | recall@10 | short answers | strategies | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {row['recall']:.4f} | {row['short_answers']} | "
                f"{', '.join(row['strategies'])} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} |"
            )
        lines.append("")
    http = report.get("http")
    if http:
        single = http["single"]
        lines += [
            "**HTTP** (uvicorn on 127.0.0.1, supplied vectors, client on the same box)",
            "",
            (
                f"- single query: p50 {single['p50_ms']} ms, p95 {single['p95_ms']} ms, "
                f"p99 {single['p99_ms']} ms ({', '.join(single['strategies'])})"
            ),
        ]
        for clients, row in http["throughput"].items():
            lines.append(
                f"- {clients} concurrent clients: {row['qps']} queries/s, p50 {row['p50_ms']} ms, "
                f"p99 {row['p99_ms']} ms"
            )
        lines.append(
            f"- restart: process ready in {http['process_ready_s']} s, FAISS serving in "
            f"{http['restart_to_faiss_ready_s']} s; server RSS {http['server_rss_mb']} MB"
        )
        lines.append("")
    facts = []
    for key, label in (
        ("ingest_vectors", "ingest, supplied vectors"),
        ("ingest_text", "ingest, text"),
    ):
        if key in report:
            facts.append(
                f"- {label}: {report[key]['rows_per_s']} rows/s ({report[key]['rows']} rows)"
            )
    restart = report.get("restart_to_ready_in_process_s")
    if restart:
        facts.append(
            f"- tenant index ready in-process: from snapshot {restart['snapshot']} s, "
            f"full rebuild from PostgreSQL {restart['rebuild']} s"
        )
    synthetic = report.get("synthetic", {})
    for key, label in (
        ("snapshot_write_s", "snapshot write (s)"),
        ("snapshot_load_s", "snapshot load (s)"),
        ("rss_mb_with_index", "RSS with index (MB)"),
        ("rss_mb_before_index", "RSS before index (MB)"),
        ("index_rss_mb_after_load", "RSS of the index alone, reloaded from its snapshot (MB)"),
        ("index_estimated_mb", "index size as the memory budget counts it (MB)"),
    ):
        if key in synthetic:
            facts.append(f"- {label}: {synthetic[key]}")
    if "bench_process_rss_mb" in report:
        facts.append(
            f"- benchmark process RSS (model, data, indexes): {report['bench_process_rss_mb']} MB"
        )
    sm = summary(report)
    if "faiss_speedup_vs_pgvector" in sm:
        facts.append(
            f"- at recall >= 0.95 FAISS p50 {sm['faiss_at_0.95']['p50_ms']} ms vs pgvector "
            f"{sm['pgvector_at_equal_recall']['p50_ms']} ms at equal recall: "
            f"{sm['faiss_speedup_vs_pgvector']}x"
        )
    return "\n".join(lines + facts) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    blocks = [b for b in ("synthetic", "scifact") if report.get(b, {}).get("faiss")]
    fig, axes = plt.subplots(1, len(blocks), figsize=(6 * len(blocks), 4.5), squeeze=False)
    for ax, label in zip(axes[0], blocks, strict=True):
        for name, marker in (("faiss", "o"), ("pgvector", "s")):
            sweep = report[label].get(name, [])
            if sweep:
                ax.plot(
                    [r["p50_ms"] for r in sweep],
                    [r["recall"] for r in sweep],
                    marker=marker,
                    label=f"{name} HNSW (efSearch sweep)",
                )
                for r in sweep:
                    ax.annotate(str(r["ef_search"]), (r["p50_ms"], r["recall"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query, ms (log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{label}: {report[label].get('vectors', report['size'])} vectors")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict[str, Any], out: Path, size: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    report["summary"] = summary(report)
    json_path = out / f"search_{size}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = out / f"search_{size}.md"
    md_path.write_text(markdown(report, size))
    png_path = out / f"search_{size}_recall_latency.png"
    plot(report, png_path)
    return [json_path, md_path, png_path]
