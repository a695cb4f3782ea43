"""The markdown report of ``benchmarks.search_http``: latency table, throughput beside
its floor (both load generators), where the time went and the settings variants."""

from __future__ import annotations

from typing import Any

from benchmarks.common import stage_table

STAGE_ROUTES = ("POST /v1/memories/search", "GET /health")


def _wrk_lines(w: dict[str, Any] | None) -> list[str]:
    if not w:
        return []
    s, h = w["search"], w["health"]
    return [
        (
            f"`wrk`, 16 connections: {s.get('served_per_s', s['per_s']):,.0f} searches/s "
            f"answered ({s['non_2xx']:.0f} refused; p50 {s.get('p50_ms')} ms, "
            f"p99 {s.get('p99_ms')} ms) against {h['per_s']:,.0f} `GET /health`/s "
            f"(p50 {h.get('p50_ms')} ms): searches/s = **{w['search_over_health']}** of "
            "`/health`/s."
        ),
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    lat = r["latency"]
    lines = [
        (
            f"Search over HTTP, {r['label']}: {r['memories']:,} memories, {r['machine']}; "
            f"pgvector's graph caught up {r.get('graph_catch_up_s', '?')} s after the load; "
            f"`GET /health` p50 {lat['health_p50_ms']} ms; "
            f"16 clients: {r['qps_16_clients']} searches/s answered, {r.get('refused_16_clients', 0)} refused "
            f"(p50 {r.get('p50_ms_16_clients')} ms, "
            f"p99 {r.get('p99_ms_16_clients')} ms; through httpx {r.get('qps_16_clients_httpx')}/s), "
            f"`GET /health` {r.get('health_per_s_16_clients')}/s from the same generator."
        ),
        "",
        *_wrk_lines(r.get("wrk")),
        "| search | p50 ms | p99 ms | p50 / health p50 | p99 / health p50 | exactly k | recall@10 | answered by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in lat.items():
        if not isinstance(row, dict):
            continue
        lines.append(
            f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['p50_over_health']}x | "
            f"{row['p99_over_health_p50']}x | {row.get('exactly_k', '')} | "
            f"{row.get('recall_at_10', '')} | {', '.join(row['strategies'])} |"
        )
    if "text default" in lat and "text vector" in lat:
        lines += [
            "",
            (
                "The same query text without a mode (the default, hybrid) against `mode: "
                f'"vector"`: p50 {lat["text default"]["p50_ms"] / lat["text vector"]["p50_ms"]:.2f}x, '
                f"p99 {lat['text default']['p99_ms'] / lat['text vector']['p99_ms']:.2f}x "
                "(query embeddings cached for both)."
            ),
        ]
    if r.get("latency_stages"):
        lines += [
            "",
            (
                f"Where the time went, as the service measured it (mean ms per request; load "
                f"average {[round(x, 2) for x in r['load_average']]}), one client, every case:"
            ),
            "",
            *stage_table(r["latency_stages"], STAGE_ROUTES),
            "",
            "16 clients (both load generators):",
            "",
            *stage_table(r["throughput_stages"], STAGE_ROUTES),
        ]
    if r.get("variants"):
        lines += [
            "",
            "The service restarted on the same data under other settings (unfiltered vector query):",
            "",
            (
                "| settings | health p50 ms | vector p50 ms | p99 ms | p50 / health p50 "
                "| 16 clients/s | through httpx/s |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in r["variants"].items():
            lines.append(
                f"| {name} | {v['health_p50_ms']} | {v['vector']['p50_ms']} | "
                f"{v['vector']['p99_ms']} | {v['vector']['p50_over_health']}x | "
                f"{v['qps_16_clients']} | {v.get('qps_16_clients_httpx', '')} |"
            )
    return "\n".join(lines)
