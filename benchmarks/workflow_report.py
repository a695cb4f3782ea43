"""The Markdown report of ``workflow_bench``: one table per workflow shape, the kill -9 table.

Reads the results dictionary that ``workflow_bench.run`` returns (and writes
as JSON) and lays it out: throughput, claim and end-to-end latencies, the
request ceiling and CPU ratios, and where the service spent each request's
time, by stage.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import stage_table

STAGE_ROUTES = (
    "POST /v1/workers/claim",
    "POST /v1/workers/attempts/{attempt_id}/complete",
    "GET /v1/workflows",
)


def markdown(r: dict[str, Any]) -> str:
    k = r["kill_9"]
    lines = [
        "# Workflow benchmark", "",
        (f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['note']}. "
         f"{r['workers']} HTTP workers, up to {r['max_steps']} steps per claim. Workers "
         "complete each attempt and claim the next in one request; the same run also "
         "measured them completing and claiming in two requests each."),
    ]  # fmt: skip
    for shape, m in r["shapes"].items():
        lines += ["", *shape_markdown(shape, m)]
    if k:
        lines += [
            "", f"| kill -9 mid-run, {k['runs']} diamond runs | value |", "|---|---|",
            f"| runs by status after restart | {k['runs_by_status']} |",
            f"| steps with two recorded outputs (database) | {k['steps_with_two_outputs']} |",
            f"| steps accepted twice (workers) | {k['worker_side_steps_accepted_twice']} |",
            f"| restart to ready s / kill to all done s | {k['restart_s']} / {k['recovered_s']} |",
        ]  # fmt: skip
    return "\n".join([*lines, ""])


def shape_markdown(shape: str, m: dict[str, Any]) -> list[str]:
    t, s = m["throughput"], m["throughput_complete_then_claim"]
    lines = [
        f"## {shape}", "",
        f"| {t['runs']} {shape} runs ({t['steps']} steps) | one request per step | two requests per step |",
        "|---|---|---|",
        f"| steps/s | {t['steps_per_s']} | {s['steps_per_s']} |",
        f"| ratio to half the request ceiling | {t['ratio_steps_to_half_http_ceiling']} | {s['ratio_steps_to_half_http_ceiling']} |",
        f"| load average (1, 5, 15 min) after | {[round(x, 2) for x in t['load_average']]} | {[round(x, 2) for x in s['load_average']]} |",
        f"| baseline: cheap authenticated requests/s (a step costs two), mean of the two beside it | {t['baseline_http_requests_per_s']} | {s['baseline_http_requests_per_s']} |",
        "| claim latency p50 / p95 ms, workers idle in long polls | {p50_ms} / {p95_ms}".format(**t["claim_latency_idle_long_poll"])
        + " | {p50_ms} / {p95_ms} |".format(**s["claim_latency_idle_long_poll"]),
        "| claim latency p50 / p95 ms, under load (queueing) | {p50_ms} / {p95_ms}".format(**t["claim_latency_under_load"])
        + " | {p50_ms} / {p95_ms} |".format(**s["claim_latency_under_load"]),
        "| end-to-end run latency p50 / p95 ms, all runs started at once | {p50_ms} / {p95_ms}".format(**t["end_to_end"])
        + " | {p50_ms} / {p95_ms} |".format(**s["end_to_end"]),
        "| end-to-end run latency p50 / p95 ms, runs one at a time | {p50_ms} / {p95_ms}".format(**t["end_to_end_paced"])
        + " | {p50_ms} / {p95_ms} |".format(**s["end_to_end_paced"]),
        f"| CPU ms (service + database) per step / per baseline request | {t['cpu_ms_per_step']} / {t['baseline_cpu_ms_per_request']} | {s['cpu_ms_per_step']} / {s['baseline_cpu_ms_per_request']} |",
        f"| of which the service process / its database | {t.get('service_cpu_ms_per_step')} / {t.get('database_cpu_ms_per_step')} | {s.get('service_cpu_ms_per_step')} / {s.get('database_cpu_ms_per_step')} |",
        f"| CPU ratio: two baseline requests to one step | {t['cpu_ratio_two_requests_to_step']} | {s['cpu_ratio_two_requests_to_step']} |",
        "| floor: one cheap authenticated request alone, p50 / p95 ms | | {p50_ms} / {p95_ms} |".format(**m["floor_request"]),
        f"| paced end-to-end p50 over ten floor requests | | {m['paced_end_to_end_to_ten_floor_requests']} |",
    ]  # fmt: skip
    return [
        *lines,
        "", "Where the time went, as the service measured it (mean ms per request), one request per step:", "",
        *stage_table(t["stages"], STAGE_ROUTES),
        "", "Two requests per step:", "",
        *stage_table(s["stages"], STAGE_ROUTES),
        "", "The baseline's requests:", "",
        *stage_table(m["baseline_stages"], STAGE_ROUTES),
    ]  # fmt: skip
