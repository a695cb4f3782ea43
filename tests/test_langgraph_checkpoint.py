"""``MemoryServiceSaver`` against the real service: LangGraph's conformance suite, and a
graph that resumes in a new process and travels back to an earlier checkpoint."""

from __future__ import annotations

import operator
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, StateGraph
from memory_service_client import MemoryClient
from memory_service_client.langgraph import MemoryServiceSaver

from tests.conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def tenant_key(live_url: str) -> str:
    with MemoryClient(live_url, admin_token=ADMIN_TOKEN) as admin:
        return admin.create_tenant(f"lg-{uuid.uuid4().hex[:6]}")["api_key"]


async def test_the_langgraph_conformance_suite_passes(live_url: str) -> None:
    key = tenant_key(live_url)

    @checkpointer_test(name="MemoryServiceSaver")
    async def saver():  # type: ignore[no-untyped-def]
        with MemoryClient(live_url, key) as client:
            yield MemoryServiceSaver(client)

    report = await validate(saver)
    report.print_report()
    assert report.passed_all_base(), report.to_dict()
    for extended in ("copy_thread", "prune"):
        assert report.results[extended].passed is True, report.to_dict()
    assert report.passed_all(), report.to_dict()


class Counter(TypedDict):
    count: int
    log: Annotated[list[str], operator.add]


def _node(name: str, add: int) -> Any:
    def run(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] + add, "log": [name]}

    return run


def build_graph(saver: MemoryServiceSaver) -> Any:
    builder = StateGraph(Counter)
    for name, add in [("a", 1), ("b", 10), ("c", 100)]:
        builder.add_node(name, _node(name, add))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=saver, interrupt_before=["c"])


FIRST_PROCESS = """
import sys
from memory_service_client import MemoryClient
from memory_service_client.langgraph import MemoryServiceSaver
from tests.test_langgraph_checkpoint import build_graph
url, key, thread = sys.argv[1:4]
graph = build_graph(MemoryServiceSaver(MemoryClient(url, key)))
out = graph.invoke({"count": 0, "log": []}, {"configurable": {"thread_id": thread}})
assert out["log"] == ["a", "b"], out
"""


def test_a_graph_resumes_in_a_new_process_and_travels_back(live_url: str) -> None:
    key, thread = tenant_key(live_url), f"thread-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        [sys.executable, "-c", FIRST_PROCESS, live_url, key, thread],
        cwd=ROOT, check=True, timeout=120,
    )
    config = {"configurable": {"thread_id": thread}}
    with MemoryClient(live_url, key) as client:
        graph = build_graph(MemoryServiceSaver(client))
        assert graph.get_state(config).next == ("c",)
        done = graph.invoke(None, config)
        assert (done["count"], done["log"]) == (111, ["a", "b", "c"])

        history = list(graph.get_state_history(config))
        assert [s.values.get("count") for s in history][:4] == [111, 11, 1, 0]
        after_a = next(s for s in history if s.next == ("b",))
        branch = graph.update_state(after_a.config, {"count": 5})
        graph.invoke(None, branch)  # b runs, then the interrupt before c
        resumed = graph.invoke(None, config)
        assert (resumed["count"], resumed["log"]) == (115, ["a", "b", "c"])

        # the thread is an execution: its checkpoints are steps linked to their parents
        (execution,) = client.list_executions(agent_id="langgraph")["items"]
        steps = [s for s in client.iter_steps(execution["id"]) if s["kind"] == "checkpoint"]
        assert len(steps) >= 8 and all(s["parent_seq"] is not None for s in steps[1:])
        diff = client.diff_execution(execution["id"], steps[0]["seq"], steps[-1]["seq"])
        assert any("count" in str(op.get("path")) for op in diff["patch"]), diff
