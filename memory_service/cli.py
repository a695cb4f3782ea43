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


@command("stop", "stop the service processes and the embedded PostgreSQL of MEMORY_DATA_DIR", lambda p: None)
def stop_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service import db

    if settings.database_url:
        print("memory-service: MEMORY_DATABASE_URL is set; there is no embedded database to stop")
        return 0
    print(db.stop_data_dir(settings))
    return 0


@command("settings-reference", "print the Markdown reference of every MEMORY_* setting", lambda p: None)
def settings_reference_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.config import settings_reference

    print(settings_reference(), end="")
    return 0


@command("new-secrets-key", "print a new key for MEMORY_SECRETS_KEY", lambda p: None)
def new_secrets_key_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.secret_box import new_key

    print(new_key())
    return 0


@command(
    "rotate-secrets",
    "re-encrypt every stored secret under the first key of MEMORY_SECRETS_KEY",
    lambda p: None,
)
def rotate_secrets_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service import db
    from memory_service.environments import reseal_secrets
    from memory_service.secret_box import load_secret_box

    box = load_secret_box(settings)
    if box is None:
        print("memory-service: set MEMORY_SECRETS_KEY (new key first, old keys after)", file=sys.stderr)
        return 2
    url = db.resolve_database_url(settings)
    try:
        with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
            changed = reseal_secrets(conn, box, everything=True)
    finally:
        db.stop_embedded(settings)
    print(f"re-encrypted the secrets of {changed} environment(s) under the first key")
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
    except SettingsError as exc:
        print(f"memory-service: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load_plugins() -> None:
    """Import modules that add subcommands (they register on import)."""
    import importlib

    for module in ("memory_service.tuning", "memory_service.mcp_command"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    from memory_service.transfer.commands import register as register_transfer

    register_transfer(command)


if __name__ == "__main__":
    # run as ``python -m``: use the importable module, where plugins register
    from memory_service.cli import main as module_main

    sys.exit(module_main())
