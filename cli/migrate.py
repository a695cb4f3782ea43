"""``memory-service migrate``: apply pending database migrations and exit."""

from __future__ import annotations

import argparse

from memory_service.config import Settings

NAME = "migrate"
HELP = "apply pending database migrations and exit"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.embedding.embeddings import load_embedder
    from memory_service.infra import db
    from memory_service.infra.migrate import run_migrations

    url = db.resolve_database_url(settings)
    dimension = load_embedder(settings.embedding_model).dimension
    applied = run_migrations(url, dimension)
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "schema is current")
    return 0
