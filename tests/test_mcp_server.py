"""``memory-service mcp`` over stdio, driven by the official MCP client session."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from memory_service_client import MemoryClient

from tests.conftest import ADMIN_TOKEN

TOOLS = {
    "add_memory", "search_memories", "get_memory", "update_memory", "delete_memory",
    "list_tasks", "update_task", "record_event",
}


def _result(call: Any) -> Any:
    assert not call.is_error, call.content
    if call.structured_content is not None:
        content = call.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(call.content[0].text)


@pytest.fixture
def api_key(live_url: str) -> str:
    with MemoryClient(live_url, admin_token=ADMIN_TOKEN) as admin:
        return admin.create_tenant(f"mcp-{uuid.uuid4().hex[:6]}")["api_key"]


async def test_an_mcp_session_adds_searches_updates_and_deletes_memories(
    live_url: str, api_key: str
) -> None:
    with MemoryClient(live_url, api_key) as direct:
        task = direct.create_task("file the report")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "cli", "mcp", "--url", live_url, "--api-key", api_key],
        env={"MEMORY_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"},
    )
    with anyio.fail_after(120):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert tools >= TOOLS

            added = _result(await session.call_tool(
                "add_memory", {"content": "The user's dog is called Biscuit", "user_id": "u"}
            ))
            hits = _result(await session.call_tool(
                "search_memories", {"query": "what is the dog's name", "user_id": "u", "k": 3}
            ))
            assert hits[0]["id"] == added["id"] and hits[0]["score"] > 0
            updated = _result(await session.call_tool(
                "update_memory", {"memory_id": added["id"], "content": "The dog is called Rex"}
            ))
            assert updated["version"] == 2
            got = _result(await session.call_tool("get_memory", {"memory_id": added["id"]}))
            assert got["content"] == "The dog is called Rex"

            listed = _result(await session.call_tool("list_tasks", {"status": ["pending"]}))
            assert [t["id"] for t in listed] == [task["id"]]
            moved = _result(await session.call_tool(
                "update_task", {"task_id": task["id"], "status": "in_progress"}
            ))
            assert moved["status"] == "in_progress"
            event = _result(await session.call_tool(
                "record_event", {"type": "tool.call", "attributes": {"tool": "search"}}
            ))
            assert event["type"] == "tool.call"

            await session.call_tool("delete_memory", {"memory_id": added["id"]})
            gone = await session.call_tool("get_memory", {"memory_id": added["id"]})
            assert gone.is_error and "404" in gone.content[0].text

    with MemoryClient(live_url, api_key) as direct:
        assert direct.list_memories()["items"] == []
        assert [e["type"] for e in direct.iter_events(type=["tool"])] == ["tool.call"]
