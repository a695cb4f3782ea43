"""The data and the service under test of the search benchmarks over HTTP: vectors and
SciFact texts, starting a service from a source tree, loading it, the request cases
and the exact answers they are checked against."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from tqdm import tqdm

from benchmarks.common import (
    serve_until_ready,
)
from benchmarks.ingest_bench import drain_seconds
from memory_service.config import Settings
from memory_service.infra import db

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ADMIN = "bench-admin"
K = 10
USERS = 10  # the user_id scope of row i is u{i % USERS}
FILTERS = {"0.1%": ("s1000", 1000), "1%": ("s100", 100), "10%": ("s10", 10), "50%": ("s2", 2)}


def vectors(n: int, seed: int) -> np.ndarray:
    """Clustered unit vectors in a 24-dimensional subspace (HNSW finds them as it finds
    real embeddings)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((24, 384)) / np.sqrt(24)
    centres = np.random.default_rng(4321).standard_normal((200, 24))
    z = centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, 24))
    x = z @ basis + 0.05 * rng.standard_normal((n, 384))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def texts(data: Path) -> tuple[list[str], list[str]]:
    corpus = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open()]
    docs = [f"{d.get('title', '')}. {d['text']}"[:600] for d in corpus]
    queries = [json.loads(line)["text"] for line in (data / "scifact" / "queries.jsonl").open()]
    return docs, queries


def graph_catch_up(data_dir: Path, tenant_id: str) -> float:
    """Seconds until pgvector's index worker has put every loaded row into its graph: the
    catch-up takes both cores for a while, and measuring beside it measures it."""
    url = db.resolve_database_url(Settings(data_dir=str(data_dir)))
    return drain_seconds(url, tenant_id)[0]


def start(
    root: Path, port: int, data_dir: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    module = "cli" if (root / "cli" / "__main__.py").exists() else "memory_service.cli"
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_ADMIN_TOKEN": ADMIN,
        "MEMORY_LOG_LEVEL": "WARNING",
        "MEMORY_DB_POOL_MAX": "24",
        # one tenant drives every request: lift the per-tenant limit (500/s by default)
        "MEMORY_TENANT_REQUESTS_PER_SECOND": "0",
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        **(extra or {}),
    }
    return serve_until_ready(
        [sys.executable, "-m", module, "serve"], root, env, port, data_dir / "service.log", 300
    )


def load(client: httpx.Client, vecs: np.ndarray, docs: list[str]) -> float:
    started = time.perf_counter()
    for s in tqdm(range(0, len(vecs), 1000), desc="load (HTTP, supplied vectors)", unit="batch"):
        items = [
            {
                "content": f"m{i} {docs[i % len(docs)]}",
                "user_id": f"u{i % USERS}",
                "embedding": vecs[i].tolist(),
                "metadata": {key: i % mod for key, mod in FILTERS.values()},
            }
            for i in range(s, min(len(vecs), s + 1000))
        ]
        body = msgspec.json.encode({"items": items})
        r = client.post(
            "/v1/memories/batch", content=body, headers={"Content-Type": "application/json"}
        )
        r.raise_for_status()
    return len(vecs) / (time.perf_counter() - started)


def scope_graphs(client: httpx.Client, count: int, limit: float = 120.0) -> float:
    """Seconds until the service has built the graphs of the ``count`` scopes the warm-up
    searched (a service without scope graphs: none to wait for)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        text = client.get("/metrics").text
        found = re.search(r'^memory_scope_indexes\{index="faiss"\} (\S+)$', text, re.M)
        if found is None or float(found.group(1)) >= count:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def timed(client: httpx.Client, method: str, path: str, **kw: Any) -> tuple[float, Any]:
    if "json" in kw:  # encoded before the clock starts: the service's time, not the client's
        kw["content"] = msgspec.json.encode(kw.pop("json"))
        kw["headers"] = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    r = client.request(method, path, **kw)
    ms = (time.perf_counter() - t0) * 1000.0
    r.raise_for_status()
    return ms, (r.json() if method == "POST" else None)


def cases(queries: np.ndarray, words: list[str]) -> dict[str, Any]:
    """name -> function(i) -> request body."""

    def vec(i: int, **extra: Any) -> dict[str, Any]:
        return {"embedding": queries[i].tolist(), "k": K, **extra}

    out: dict[str, Any] = {
        "vector": lambda i: vec(i),
        "vector user_id": lambda i: vec(i, user_id=f"u{i % USERS}"),
        "vector strong": lambda i: vec(i, consistency="strong"),
    }
    for name, (key, _) in FILTERS.items():
        out[f"vector filter {name}"] = lambda i, key=key: vec(i, filter={f"metadata.{key}": 1})
    # the same query text in each mode; without a mode the service's default (hybrid)
    out["text vector"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "vector"}
    out["text default"] = lambda i: {"query": words[i % len(words)], "k": K}
    out["keyword"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "keyword"}
    out["hybrid"] = lambda i: {"query": words[i % len(words)], "k": K, "mode": "hybrid"}
    # text the service has never embedded (a word no memory holds makes each one new): the
    # model's time is part of the answer, as for most real queries
    fresh = itertools.count()
    out["new text vector"] = lambda i: {
        "query": f"{words[i % len(words)]} zq{next(fresh)}",
        "k": K,
        "mode": "vector",
    }
    out["new text default"] = lambda i: {
        "query": f"{words[i % len(words)]} zq{next(fresh)}",
        "k": K,
    }
    return out


def embed_every_query(client: httpx.Client, words: list[str], n: int) -> None:
    """Send each query text once before measuring: the service keeps query embeddings in
    a cache, so whichever mode came first in a round would otherwise pay the model for
    all the others. The text rows then compare the searches alone (the model's cost is
    ``benchmarks/embedding_bench.py``'s)."""
    for i in range(n):
        body = {"query": words[i % len(words)], "k": 1, "mode": "vector"}
        timed(client, "POST", "/v1/memories/search", json=body)


def truth(vecs: np.ndarray, q: np.ndarray, mod: int, residue: int = 1) -> list[int]:
    allowed = np.flatnonzero(np.arange(len(vecs)) % mod == residue)
    return allowed[np.argsort(-(vecs[allowed] @ q))[:K]].tolist()
