"""``memory-service serve``: run the HTTP service under uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from memory_service.config import Settings

NAME = "serve"
HELP = "run the HTTP service"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default: MEMORY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: MEMORY_PORT or 8080)")


def one_blas_thread() -> None:
    """A request's matrix products (scoring a few thousand held vectors) are small, and
    after each one that OpenBLAS splits, its idle thread spins on a core for about 0.1 s:
    measured on two cores, 106 ms of CPU in 105 ms of sleep after a 10,000-row product.
    The model and FAISS keep their own threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.http_server import protocol
    from memory_service.embedding.embeddings import EmbeddingError, embedder_from_settings

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    settings = settings.with_(**overrides)
    try:
        # load the model before anything else so that a bad model fails fast and clearly
        embedder = embedder_from_settings(settings)
    except EmbeddingError as exc:
        print(f"memory-service: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, embedder=embedder)
    one_blas_thread()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop=settings.http_loop,
        http=protocol(settings.http_parser),  # refusals of unreadable requests as problems
        access_log=False,
        lifespan="on",
    )
    return 0
