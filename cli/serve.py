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


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from memory_service.embeddings import EmbeddingError, embedder_from_settings

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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop=settings.http_loop,
        http=settings.http_parser,
        access_log=False,
        lifespan="on",
    )
    return 0
