"""``memory-service import``: an NDJSON export into a tenant of a running service."""

from __future__ import annotations

import argparse

from cli.transfer_http import import_args, run_import
from memory_service.config import Settings

NAME = "import"
HELP = "import an NDJSON export into a tenant of a running service"


def configure(p: argparse.ArgumentParser) -> None:
    import_args(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_import(args)
