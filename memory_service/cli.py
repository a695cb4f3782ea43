"""The ``memory-service`` command: ``serve``, ``migrate`` and friends.

Subcommands register in ``COMMANDS``; each gets the parsed arguments and the
settings read once from the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from memory_service.config import Settings, SettingsError

Command = Callable[[argparse.Namespace, Settings], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(fn: Command) -> Command:
        COMMANDS[name] = (help, configure, fn)
        return fn

    return register


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default: MEMORY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: MEMORY_PORT or 8080)")


@command("serve", "run the HTTP service", _serve_args)
def serve(args: argparse.Namespace, settings: Settings) -> int:
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
        access_log=False,
        lifespan="on",
    )
    return 0


@command("migrate", "apply pending database migrations and exit", lambda p: None)
def migrate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service import db
    from memory_service.embeddings import load_embedder
    from memory_service.runtime import run_migrations

    url = db.resolve_database_url(settings)
    dimension = load_embedder(settings.embedding_model).dimension
    applied = run_migrations(url, dimension)
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "schema is current")
    return 0


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="memory-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"memory-service: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _, _, fn = COMMANDS[args.command]
    try:
        return fn(args, settings)
    except KeyboardInterrupt:
        return 130


def _load_plugins() -> None:
    """Import modules that add subcommands (they register on import)."""
    import importlib

    for module in ("memory_service.tuning",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


if __name__ == "__main__":
    sys.exit(main())
