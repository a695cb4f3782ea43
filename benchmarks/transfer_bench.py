"""Data in and out: browser-storage migration time, export/import rate and memory.

Runs the core in-process (``Runtime``, the real all-MiniLM-L6-v2 model, a fresh
embedded PostgreSQL) and measures, each beside a baseline taken in the same run:

- migration of a synthetic browser export (``--tasks``, ``--envs``, ``--memories``
  short memories): the dry run, and the whole job; the baseline is embedding the
  same memory texts alone, in the same batches, so the ratio says how much of
  the migration is the model;
- export and import of ``--transfer`` memories with their embeddings carried
  (no re-embedding): memories per second and the growth of this process's RSS
  while each runs; the baselines are the ordinary batch ingest with given
  embeddings (``MemoryService.add_many``, batches of 1,000) for the import, and
  a bare psycopg read of the same rows and vectors for the export.

Writes ``benchmarks/results/transfer.json`` and ``transfer.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.common import machine, parse_size, rss_mb, synthetic_vectors
from memory_service.config import Settings
from memory_service.infra import db
from memory_service.memories.models import NewMemory
from memory_service.runtime import Runtime
from memory_service.transfer.exporter import ExportOptions

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ["apple", "river", "cloud", "tiger", "piano", "granite", "violet", "harbor", "lantern", "meadow", "orbit", "pepper", "quartz", "saddle", "thunder", "velvet", "willow", "yarn", "zephyr", "amber"]
STATUSES = ("todo", "in-progress", "done", "failed", "cancelled")


class PeakRss:
    """Samples this process's RSS every 100 ms; ``growth`` is the peak above the start."""

    def __init__(self) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return round(self.peak - self.start, 1)


def browser_export(tasks: int, envs: int, memories: int, seed: int = 7) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    base = 1_700_000_000_000

    def words(n: int) -> str:
        return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))

    environments = [
        {"id": f"env-{i}", "name": f"environment {i}", "config": {"region": "eu"},
         "secrets": {"TOKEN": f"secret-{i}"}, "createdAt": base + i, "updatedAt": base + i}
        for i in range(envs)
    ]
    task_items = [
        {"id": f"task-{i}", "title": f"task {i}: {words(5)}", "status": STATUSES[i % 5],
         "priority": "high", "environmentId": f"env-{i % envs}", "createdAt": base + i,
         "updatedAt": base + i, "estimate": int(rng.integers(1, 9))}
        for i in range(tasks)
    ]
    memory_items = [
        {"id": f"mem-{i}", "content": f"note {i}: {words(8)}", "userId": f"user-{i % 50}",
         "createdAt": base + i, "updatedAt": base + i}
        for i in range(memories)
    ]

    def store(name: str, items: list[dict[str, Any]]) -> str:
        return json.dumps({"state": {name: items}, "version": 1})

    return {
        "platform-environments": store("environments", environments),
        "platform-tasks": store("tasks", task_items),
        "platform-memories": store("memories", memory_items),
    }


async def migration(runtime: Runtime, tenant_id: uuid.UUID, args: argparse.Namespace) -> dict[str, Any]:
    assert runtime.migrations is not None
    payload = browser_export(args.tasks, args.envs, args.memories)
    size_mb = sum(len(v) for v in payload.values()) / 1e6
    started = time.perf_counter()
    report = await runtime.migrations.dry_run(tenant_id, payload)
    dry_s = time.perf_counter() - started
    assert report.valid, report.rejected[:3]
    if args.dry_run_only:
        return {
            "items": {"tasks": args.tasks, "environments": args.envs, "memories": args.memories},
            "input_mb": round(size_mb, 1),
            "dry_run_s": round(dry_s, 2),
        }
    texts = [json.loads(payload["platform-memories"])["state"]["memories"][i]["content"]
             for i in range(args.memories)]
    started = time.perf_counter()
    for i in tqdm(range(0, len(texts), 256), desc="baseline: embed only"):
        await runtime.embedder.embed_async(texts[i : i + 256])
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    job = await runtime.migrations.start(tenant_id, payload)
    total = args.tasks + args.envs + args.memories
    with tqdm(total=total, desc="migration job") as bar:
        while True:
            current = await runtime.migrations.get(tenant_id, job.id)
            bar.n = sum(current.done.values())
            bar.refresh()
            if current.status not in ("pending", "running"):
                break
            await asyncio.sleep(0.5)
    job_s = time.perf_counter() - started
    assert current.status == "completed", current.errors
    return {
        "items": {"tasks": args.tasks, "environments": args.envs, "memories": args.memories},
        "input_mb": round(size_mb, 1),
        "dry_run_s": round(dry_s, 2),
        "migration_s": round(job_s, 1),
        "baseline_embed_only_s": round(embed_s, 1),
        "embedding_share_of_migration": round(embed_s / job_s, 3),
    }


async def seed(runtime: Runtime, tenant_id: uuid.UUID, n: int) -> float:
    """The baseline ingest: add_many with given embeddings; returns memories/s."""
    vectors = synthetic_vectors(n, seed=11)
    started = time.perf_counter()
    for i in tqdm(range(0, n, 1000), desc="baseline: batch ingest"):
        items = [NewMemory(content=f"memory {j} {WORDS[j % 20]} {WORDS[(j * 7) % 20]}",
                           embedding=vectors[j].tolist(), metadata={"j": j})
                 for j in range(i, min(n, i + 1000))]
        await runtime.memories.add_many(tenant_id, items)
    return n / (time.perf_counter() - started)


def raw_read_rate(url: str, tenant_id: uuid.UUID) -> float:
    import psycopg
    from pgvector.psycopg import register_vector

    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor(name="raw") as cur:
            cur.itersize = 1000
            cur.execute("SELECT id, content, metadata, embedding FROM memories "
                        "WHERE tenant_id = %s ORDER BY seq", (tenant_id,))
            n = sum(1 for _ in cur)
    return n / (time.perf_counter() - started)


async def file_chunks(path: Path, bar: tqdm) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(256 * 1024):
            bar.update(len(chunk))
            yield chunk


async def export_import(runtime: Runtime, work: Path, n: int) -> dict[str, Any]:
    created_source, _ = await runtime.tenants.create_tenant("bench-source")
    created_target, _ = await runtime.tenants.create_tenant("bench-target")
    source, target = uuid.UUID(created_source.id), uuid.UUID(created_target.id)
    ingest_rate = await seed(runtime, source, n)
    print(f"batch ingest {ingest_rate:.0f}/s", flush=True)
    raw_rate = raw_read_rate(runtime.database_url, source)
    print(f"raw read {raw_rate:.0f}/s", flush=True)
    path = work / "export.ndjson"
    options = ExportOptions(types=["memory"])
    with PeakRss() as export_rss, path.open("wb") as f, tqdm(total=n, desc="export") as bar:
        started = time.perf_counter()
        async for chunk in runtime.transfers.export(source, options):
            f.write(chunk)
            bar.update(chunk.count(b'{"type":"memory"'))
        export_s = time.perf_counter() - started
    print(f"export {n / export_s:.0f}/s", flush=True)
    size = path.stat().st_size
    with PeakRss() as import_rss, tqdm(total=size, unit="B", unit_scale=True,
                                       desc="import") as bar:
        started = time.perf_counter()
        report = await runtime.transfers.import_stream(target, file_chunks(path, bar))
        import_s = time.perf_counter() - started
    print(f"import {n / import_s:.0f}/s", flush=True)
    assert report.counts["memory"] == {"created": n}, report.counts
    return {
        "memories": n,
        "file_mb": round(size / 1e6, 1),
        "export_per_s": round(n / export_s),
        "import_per_s": round(n / import_s),
        "baseline_raw_read_per_s": round(raw_rate),
        "baseline_batch_ingest_per_s": round(ingest_rate),
        "ratio_export_to_raw_read": round(n / export_s / raw_rate, 3),
        "ratio_import_to_batch_ingest": round(n / import_s / ingest_rate, 3),
        "export_rss_growth_mb": export_rss.growth,
        "import_rss_growth_mb": import_rss.growth,
    }


def save(result: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result), flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    work.chmod(0o755)
    settings = Settings(data_dir=str(work), db_statement_timeout_ms=600_000)
    runtime = await Runtime.start(settings)
    try:
        result: dict[str, Any] = {"machine": machine()}
        if args.memories or args.tasks:
            tenant, _ = await runtime.tenants.create_tenant("bench-migration")
            result["migration"] = await migration(runtime, uuid.UUID(tenant.id), args)
            save(result, args.output)
        if args.transfer:
            result["transfer"] = await export_import(runtime, work, args.transfer)
            save(result, args.output)
    finally:
        # the results are saved; a slow shutdown of the background indexes must not hang here
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.close(), 120)
        db.stop_embedded(settings)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Data transfer benchmark", "",
             f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['note']}.", ""]
    if "migration" in result:
        m = result["migration"]
        items = m["items"]
        lines += [
            (f"Browser export: {items['tasks']} tasks, {items['environments']} environments, "
            f"{items['memories']} short memories ({m['input_mb']} MB of JSON)."), "",
            "| step | seconds |", "|---|---|",
            f"| dry run (validate, map, read the source map) | {m['dry_run_s']} |",
        ]
        if "migration_s" in m:
            lines += [
                f"| migration job (embed, write, bookkeeping, progress) | {m['migration_s']} |",
                f"| baseline: embedding the memory texts alone | {m['baseline_embed_only_s']} |",
                f"| share of the job that is embedding | {m['embedding_share_of_migration']} |",
            ]
        lines.append("")
    if "transfer" in result:
        t = result["transfer"]
        lines += [
            (f"Export/import of {t['memories']} memories with embeddings carried "
            f"({t['file_mb']} MB NDJSON)."), "",
            "| step | memories/s | baseline | ratio | RSS growth MB |", "|---|---|---|---|---|",
            (f"| export | {t['export_per_s']} | raw psycopg read {t['baseline_raw_read_per_s']} | "
            f"{t['ratio_export_to_raw_read']} | {t['export_rss_growth_mb']} |"),
            (f"| import | {t['import_per_s']} | batch ingest {t['baseline_batch_ingest_per_s']} | "
            f"{t['ratio_import_to_batch_ingest']} | {t['import_rss_growth_mb']} |"), "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--envs", type=int, default=200)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument("--transfer", type=parse_size, default=100_000,
                        help="memories exported and imported (e.g. 10k, 100k; 0: skip)")
    parser.add_argument("--dry-run-only", action="store_true",
                        help="time the migration's dry run, not the job")
    parser.add_argument("--output", default="transfer", help="results file name (no suffix)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
