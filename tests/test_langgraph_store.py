"""``MemoryServiceStore``: LangGraph's store interface answered by the real service."""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from memory_service_client import MemoryClient
from memory_service_client.langgraph import MemoryServiceStore

from tests.conftest import ADMIN_TOKEN


@pytest.fixture
def store(live_url: str) -> Iterator[MemoryServiceStore]:
    with MemoryClient(live_url, admin_token=ADMIN_TOKEN) as admin:
        key = admin.create_tenant(f"store-{uuid.uuid4().hex[:6]}")["api_key"]
    with MemoryClient(live_url, key) as client:
        yield MemoryServiceStore(client)


def test_put_get_search_filter_delete_and_namespaces(store: MemoryServiceStore) -> None:
    store.put(("users", "u1", "facts"), "pet", {"text": "My cat is called Miso", "kind": "pet"})
    store.put(("users", "u1", "facts"), "food", {"text": "I am vegetarian", "kind": "diet"})
    store.put(("users", "u2", "facts"), "pet", {"text": "I have a parrot", "kind": "pet"})
    item = store.get(("users", "u1", "facts"), "pet")
    assert item is not None and item.value == {"text": "My cat is called Miso", "kind": "pet"}
    assert item.namespace == ("users", "u1", "facts") and item.key == "pet"
    assert store.get(("users", "u1", "facts"), "missing") is None

    hits = store.search(("users", "u1"), query="what animal do I own?", limit=2)
    assert [h.key for h in hits] == ["pet", "food"] and hits[0].score > hits[1].score
    pets = store.search(("users",), filter={"kind": "pet"}, limit=10)
    assert sorted((h.namespace[1], h.key) for h in pets) == [("u1", "pet"), ("u2", "pet")]
    assert [h.key for h in store.search(("users",), filter={"kind": {"$ne": "pet"}})] == ["food"]

    store.put(("users", "u1", "facts"), "pet", {"text": "My dog is called Rex", "kind": "pet"})
    hits = store.search(("users", "u1"), query="dog", limit=1)
    assert hits[0].value["text"] == "My dog is called Rex"

    assert store.list_namespaces(prefix=("users",)) == [
        ("users", "u1", "facts"), ("users", "u2", "facts")
    ]
    assert store.list_namespaces(max_depth=2) == [("users", "u1"), ("users", "u2")]
    assert store.list_namespaces(suffix=("facts",), limit=1) == [("users", "u1", "facts")]
    assert store.list_namespaces(prefix=("users", "*", "facts")) == [
        ("users", "u1", "facts"), ("users", "u2", "facts")
    ]
    store.delete(("users", "u1", "facts"), "pet")
    assert store.get(("users", "u1", "facts"), "pet") is None


def test_a_ttl_expires_an_item(store: MemoryServiceStore) -> None:
    store.put(("tmp",), "short", {"text": "gone soon"}, ttl=0.02)  # 1.2 seconds
    assert store.get(("tmp",), "short", refresh_ttl=False) is not None
    time.sleep(1.5)
    assert store.get(("tmp",), "short") is None


async def test_the_async_interface_runs_the_same_batch(store: MemoryServiceStore) -> None:
    await store.aput(("a",), "k", {"text": "async value"})
    item = await store.aget(("a",), "k")
    assert item is not None and item.value == {"text": "async value"}
    assert [h.key for h in await store.asearch(("a",), query="value")] == ["k"]


class Chat(TypedDict):
    user: str
    message: str
    answers: Annotated[list[str], operator.add]


def remember_or_recall(state: Chat, *, store: BaseStore) -> dict[str, Any]:
    namespace = ("memories", state["user"])
    text = state["message"]
    if text.startswith("remember: "):
        store.put(namespace, str(uuid.uuid4()), {"text": text.removeprefix("remember: ")})
        return {"answers": ["noted"]}
    hits = store.search(namespace, query=text, limit=1)
    return {"answers": [hits[0].value["text"] if hits else "I don't know"]}


def test_a_langgraph_graph_writes_and_recalls_memories(store: MemoryServiceStore) -> None:
    builder = StateGraph(Chat)
    builder.add_node("memory", remember_or_recall)
    builder.add_edge(START, "memory")
    builder.add_edge("memory", END)
    graph = builder.compile(store=store)
    for fact in ["my favourite colour is teal", "I work as a nurse in Leeds"]:
        graph.invoke({"user": "ada", "message": f"remember: {fact}", "answers": []})
    graph.invoke({"user": "bob", "message": "remember: I work as a pilot", "answers": []})
    out = graph.invoke({"user": "ada", "message": "what is my job?", "answers": []})
    assert out["answers"] == ["I work as a nurse in Leeds"]
    out = graph.invoke({"user": "bob", "message": "what do I do for a living?", "answers": []})
    assert out["answers"] == ["I work as a pilot"]
