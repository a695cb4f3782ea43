"""An MCP server that gives assistant-style agents the service's memories, tasks and events.

Built on the official ``mcp`` package (``pip install memory-service-client[mcp]``).
Every tool calls the service through ``AsyncMemoryClient`` with the URL and API key
the server was started with, so the agent never sees the key. Errors of the
service come back to the agent as tool errors carrying the problem's detail.

Run it over stdio (what desktop assistants launch) or streamable HTTP::

    memory-service mcp --url http://127.0.0.1:8080 --api-key mk_...
    memory-service-mcp --transport streamable-http --port 8765
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memory_service_client._async import AsyncMemoryClient
from memory_service_client._exceptions import APIError, TransportError

T = TypeVar("T")

INSTRUCTIONS = (
    "Long-term memory for this agent. Search before answering questions about the user or "
    "past work; add a memory when you learn a durable fact; keep tasks up to date; record an "
    "event for notable actions."
)


async def _call(action: Callable[[], Awaitable[T]]) -> T:
    try:
        return await action()
    except APIError as exc:
        raise ToolError(f"{exc.status}: {exc.detail or exc.problem.get('title', '')}") from exc
    except TransportError as exc:
        raise ToolError(f"the memory service is unreachable: {exc}") from exc


def build_server(client: AsyncMemoryClient, *, name: str = "memory-service") -> MCPServer:
    """An ``MCPServer`` whose tools act through ``client``."""
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)

    @server.tool()
    async def add_memory(
        content: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        namespace: str | None = None,
        metadata: dict[str, Any] | None = None,
        importance: float = 0.5,
    ) -> dict[str, Any]:
        """Store a durable fact. Exact duplicates in the same scope return the existing memory."""
        return dict(
            await _call(
                lambda: client.add_memory(
                    content,
                    user_id=user_id,
                    agent_id=agent_id,
                    namespace=namespace,
                    metadata=metadata,
                    importance=importance,
                )
            )
        )

    @server.tool()
    async def search_memories(
        query: str,
        k: int = 5,
        user_id: str | None = None,
        agent_id: str | None = None,
        namespace: str | None = None,
        filter: dict[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> list[dict[str, Any]]:
        """Find memories relevant to a question; each result has the memory and its score."""
        found = await _call(
            lambda: client.search(
                query,
                k=k,
                user_id=user_id,
                agent_id=agent_id,
                namespace=namespace,
                filter=filter,
                mode=mode,
            )
        )
        return [{"score": hit["score"], **hit["memory"]} for hit in found["results"]]

    @server.tool()
    async def get_memory(memory_id: str) -> dict[str, Any]:
        """Read one memory by id."""
        return dict(await _call(lambda: client.get_memory(memory_id)))

    @server.tool()
    async def update_memory(
        memory_id: str,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
        importance: float | None = None,
    ) -> dict[str, Any]:
        """Change a memory's content, metadata or importance."""
        changes: dict[str, Any] = {
            k: v
            for k, v in {"content": content, "metadata": metadata, "importance": importance}.items()
            if v is not None
        }
        return dict(await _call(lambda: client.update_memory(memory_id, **changes)))

    @server.tool()
    async def delete_memory(memory_id: str) -> str:
        """Forget a memory."""
        await _call(lambda: client.delete_memory(memory_id))
        return f"deleted {memory_id}"

    @server.tool()
    async def list_tasks(
        status: list[str] | None = None, agent_id: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Tasks, newest first; filter by status (pending, in_progress, completed, ...)."""
        page = await _call(lambda: client.list_tasks(status=status, agent_id=agent_id, limit=limit))
        return [dict(task) for task in page["items"]]

    @server.tool()
    async def update_task(
        task_id: str,
        status: str | None = None,
        title: str | None = None,
        description: str | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """Change a task's status, title, description or priority."""
        fields = {"status": status, "title": title, "description": description, "priority": priority}
        changes: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        return dict(await _call(lambda: client.update_task(task_id, **changes)))

    @server.tool()
    async def record_event(
        type: str,
        severity: str = "info",
        attributes: dict[str, Any] | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Record something that happened (a dotted type such as tool.call)."""
        event = {
            k: v
            for k, v in {
                "type": type,
                "severity": severity,
                "attributes": attributes,
                "task_id": task_id,
                "agent_id": agent_id,
            }.items()
            if v is not None
        }
        stored = await _call(lambda: client.record_events([event]))
        return dict(stored["items"][0])

    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="service URL (default: MEMORY_SERVICE_URL)")
    parser.add_argument("--api-key", help="tenant API key (default: MEMORY_API_KEY)")
    parser.add_argument(
        "--transport", choices=["stdio", "streamable-http"], default="stdio"
    )
    parser.add_argument("--host", default="127.0.0.1", help="streamable HTTP bind address")
    parser.add_argument("--port", type=int, default=8765, help="streamable HTTP port")


def run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("MEMORY_SERVICE_URL") or "http://127.0.0.1:8080"
    api_key = args.api_key or os.environ.get("MEMORY_API_KEY")
    if not api_key:
        print("memory-service mcp: give --api-key or MEMORY_API_KEY", file=sys.stderr)
        return 2
    server = build_server(AsyncMemoryClient(url, api_key))
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memory-service-mcp", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
