"""``memory-service export``: a tenant of a running service to an NDJSON file."""

from __future__ import annotations

import argparse

from cli.transfer_http import export_args, run_export
from memory_service.config import Settings

NAME = "export"
HELP = "export a tenant of a running service to an NDJSON file"


def configure(p: argparse.ArgumentParser) -> None:
    export_args(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_export(args)
