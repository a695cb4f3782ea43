"""Parses the command line, reads the settings once and runs one subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from memory_service.config import Settings, SettingsError

# one module per subcommand, in the order ``--help`` lists them
SUBCOMMANDS = (
    "cli.serve",
    "cli.migrate",
    "cli.stop",
    "cli.tune",
    "cli.settings_reference",
    "cli.new_secrets_key",
    "cli.rotate_secrets",
    "cli.export",
    "cli.import_",
    "cli.mcp",
)


def subcommands() -> dict[str, ModuleType]:
    modules = [importlib.import_module(name) for name in SUBCOMMANDS]
    return {module.NAME: module for module in modules}


# libraries that narrate routine work at INFO (model loading, every HTTP request of a
# CLI transfer): their lines go to the debug log, so a start prints what a person reads
CHATTY_LOGGERS = ("sentence_transformers", "transformers", "httpx", "httpcore")


def quiet_third_party_loggers() -> None:
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    commands = subcommands()
    parser = argparse.ArgumentParser(
        prog="memory-service", description="Agent memory and semantic search service."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands.items():
        module.configure(sub.add_parser(name, help=module.HELP))
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
    quiet_third_party_loggers()
    try:
        code: int = commands[args.command].run(args, settings)
    except SettingsError as exc:
        print(f"memory-service: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
