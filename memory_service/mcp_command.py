"""The ``memory-service mcp`` subcommand: the MCP server of the client distribution.

The server itself lives in ``memory_service_client.mcp_server`` (it is a client of
this service's HTTP API, installable without the service); this module only
registers it as a subcommand of the service's command line.
"""

from __future__ import annotations

import argparse

from memory_service.cli import command
from memory_service.config import Settings


def _arguments(parser: argparse.ArgumentParser) -> None:
    from memory_service_client.mcp_server import add_arguments

    add_arguments(parser)


@command("mcp", "run the MCP server (stdio or streamable HTTP) against a running service", _arguments)
def mcp_command(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service_client.mcp_server import run

    return run(args)
