"""``memory-service mcp``: the MCP server of the client distribution.

The server itself lives in ``memory_service_client.mcp_server`` (it is a client of
this service's HTTP API, installable without the service); this module only
makes it a subcommand of the service's command line. Where the client or its
``mcp`` extra is not installed (the service image), the other subcommands still
work and this one says what is missing.
"""

from __future__ import annotations

import argparse
import sys

from memory_service.config import Settings

NAME = "mcp"
HELP = "run the MCP server (stdio or streamable HTTP) against a running service"


def configure(p: argparse.ArgumentParser) -> None:
    try:
        from memory_service_client.mcp_server import add_arguments
    except ImportError as exc:
        p.set_defaults(mcp_missing=str(exc))
        p.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    missing = getattr(args, "mcp_missing", None)
    if missing is not None:
        print(
            f"memory-service: the MCP server needs memory-service-client[mcp] ({missing})",
            file=sys.stderr,
        )
        return 2
    from memory_service_client.mcp_server import run as run_server

    code: int = run_server(args)
    return code
