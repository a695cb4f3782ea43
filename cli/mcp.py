"""``memory-service mcp``: the MCP server of the client distribution.

The server itself lives in ``memory_service_client.mcp_server`` (it is a client of
this service's HTTP API, installable without the service); this module only
makes it a subcommand of the service's command line.
"""

from __future__ import annotations

import argparse

from memory_service.config import Settings

NAME = "mcp"
HELP = "run the MCP server (stdio or streamable HTTP) against a running service"


def configure(p: argparse.ArgumentParser) -> None:
    from memory_service_client.mcp_server import add_arguments

    add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service_client.mcp_server import run as run_server

    code: int = run_server(args)
    return code
