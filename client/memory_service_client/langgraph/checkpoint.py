"""``MemoryServiceSaver``: a LangGraph checkpointer whose threads are the service's executions.

A LangGraph thread is an execution (agent ``langgraph``, ``metadata.langgraph_thread_id``);
each checkpoint is a ``checkpoint`` step whose ``parent_seq`` is its parent
checkpoint's step and whose state is the checkpoint (channel values serialised by
LangGraph's serde, one entry per channel, so the service's diff names the channels
that changed); pending writes are ``writes`` steps naming their checkpoint. The
service's timeline, diff, replay and fork therefore apply to LangGraph threads, and
``copy_thread`` is a fork.

Steps are append-only, so ``delete_thread`` marks the thread's executions deleted
(cancelled, ``metadata.deleted``) and they are no longer found, and ``prune`` with
``keep_latest`` moves the thread to a new execution holding each namespace's latest
checkpoint and its writes. Async methods run the blocking ones in a worker thread.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio.to_thread
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)

from memory_service_client._sync import MemoryClient

AGENT = "langgraph"
THREAD = "langgraph_thread_id"


def _name(kind: str, ns: str, checkpoint_id: str, task_id: str = "") -> str:
    return json.dumps([kind, ns, checkpoint_id, task_id], separators=(",", ":"))


class MemoryServiceSaver(BaseCheckpointSaver[str]):
    """Checkpoints of LangGraph threads stored as executions of the service."""

    def __init__(self, client: MemoryClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self._threads: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, base_url: str, api_key: str) -> MemoryServiceSaver:
        return cls(MemoryClient(base_url, api_key))

    # -- threads and steps -----------------------------------------------------------
    def _executions_of(self, thread_id: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.client.iter_executions(agent_id=AGENT)
            if e["metadata"].get(THREAD) == thread_id and not e["metadata"].get("deleted")
        ]

    def _execution(self, thread_id: str, *, create: bool = False) -> str | None:
        with self._lock:
            if thread_id in self._threads:
                return self._threads[thread_id]
            found = self._executions_of(thread_id)
            if found:
                self._threads[thread_id] = found[0]["id"]
            elif create:
                made = self.client.create_execution(agent_id=AGENT, metadata={THREAD: thread_id})
                self._threads[thread_id] = made["id"]
            return self._threads.get(thread_id)

    def _steps(self, execution_id: str) -> list[dict[str, Any]]:
        steps = []
        for step in self.client.iter_steps(execution_id):
            try:
                kind, ns, checkpoint_id, task_id = json.loads(step["name"] or "")
            except (ValueError, TypeError):
                continue
            steps.append({**step, "k": kind, "ns": ns, "cid": checkpoint_id, "task": task_id})
        return steps

    def _dump(self, value: Any) -> dict[str, str]:
        kind, data = self.serde.dumps_typed(value)
        return {"type": kind, "data": base64.b64encode(data).decode()}

    def _load(self, blob: dict[str, str]) -> Any:
        return self.serde.loads_typed((blob["type"], base64.b64decode(blob["data"])))

    # -- writes ----------------------------------------------------------------------
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        parent_id = configurable.get("checkpoint_id")
        execution_id = self._execution(thread_id, create=True)
        assert execution_id is not None
        parent_seq = None
        if parent_id:
            parent_seq = next(
                (s["seq"] for s in self._steps(execution_id)
                 if s["k"] == "checkpoint" and s["ns"] == ns and s["cid"] == parent_id),
                None,
            )
        state = {
            **{k: v for k, v in checkpoint.items() if k != "channel_values"},
            "channel_values": {k: self._dump(v) for k, v in checkpoint["channel_values"].items()},
        }
        step: dict[str, Any] = {
            "kind": "checkpoint",
            "name": _name("checkpoint", ns, checkpoint["id"]),
            "state": state,
            "metadata": {
                "checkpoint_ns": ns,
                "parent_checkpoint_id": parent_id,
                "checkpoint_metadata": self._dump(get_checkpoint_metadata(config, metadata)),
            },
        }
        if parent_seq is not None:
            step["parent_seq"] = parent_seq
        self.client.append_steps(execution_id, [step])
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        execution_id = self._execution(str(configurable["thread_id"]), create=True)
        assert execution_id is not None
        ns = configurable.get("checkpoint_ns", "")
        checkpoint_id = configurable["checkpoint_id"]
        entries = [
            [WRITES_IDX_MAP.get(channel, i), channel, self._dump(value)]
            for i, (channel, value) in enumerate(writes)
        ]
        step = {
            "kind": "writes",
            "name": _name("writes", ns, checkpoint_id, task_id),
            "metadata": {"task_id": task_id, "task_path": task_path, "writes": entries},
        }
        self.client.append_steps(execution_id, [step])

    # -- reads -----------------------------------------------------------------------
    def _tuple(
        self, thread_id: str, execution_id: str, step: dict[str, Any], steps: list[dict[str, Any]]
    ) -> CheckpointTuple:
        detail = self.client.get_step(execution_id, step["seq"], include="state")
        state, meta = detail["state"], detail["metadata"]
        checkpoint: Any = {
            **{k: v for k, v in state.items() if k != "channel_values"},
            "channel_values": {k: self._load(v) for k, v in state["channel_values"].items()},
        }
        ns, parent_id = step["ns"], meta.get("parent_checkpoint_id")
        return CheckpointTuple(
            config=_config(thread_id, ns, step["cid"]),
            checkpoint=checkpoint,
            metadata=self._load(meta["checkpoint_metadata"]),
            parent_config=_config(thread_id, ns, parent_id) if parent_id else None,
            pending_writes=self._pending_writes(execution_id, steps, ns, step["cid"]),
        )

    def _pending_writes(
        self, execution_id: str, steps: list[dict[str, Any]], ns: str, checkpoint_id: str
    ) -> list[tuple[str, str, Any]]:
        found: dict[tuple[str, int], tuple[str, str, str, Any]] = {}
        for step in steps:
            if step["k"] != "writes" or step["ns"] != ns or step["cid"] != checkpoint_id:
                continue
            meta = self.client.get_step(execution_id, step["seq"])["metadata"]
            for idx, channel, blob in meta["writes"]:
                key = (meta["task_id"], idx)
                if idx < 0 or key not in found:  # special channels replace, others keep the first
                    found[key] = (meta["task_path"], meta["task_id"], channel, blob)
        ordered = sorted(found.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
        return [(task, channel, self._load(blob)) for _, (_, task, channel, blob) in ordered]

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        execution_id = self._execution(thread_id)
        if execution_id is None:
            return None
        ns = configurable.get("checkpoint_ns", "")
        wanted = configurable.get("checkpoint_id")
        steps = self._steps(execution_id)
        candidates = [
            s for s in steps
            if s["k"] == "checkpoint" and s["ns"] == ns and (wanted is None or s["cid"] == wanted)
        ]
        if not candidates:
            return None
        return self._tuple(thread_id, execution_id, max(candidates, key=lambda s: s["cid"]), steps)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = (config or {}).get("configurable", {})
        if "thread_id" in configurable:
            thread = str(configurable["thread_id"])
            execution = self._execution(thread)
            threads = [(thread, execution)] if execution else []
        else:
            threads = [
                (e["metadata"][THREAD], e["id"])
                for e in self.client.iter_executions(agent_id=AGENT)
                if THREAD in e["metadata"] and not e["metadata"].get("deleted")
            ]
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id")
        count = 0
        for thread_id, execution_id in threads:
            steps = self._steps(execution_id)
            chosen = sorted(
                (s for s in steps if s["k"] == "checkpoint" and _wanted(s, configurable, before_id)),
                key=lambda s: s["cid"],
                reverse=True,
            )
            for step in chosen:
                found = self._tuple(thread_id, execution_id, step, steps)
                if filter and any(found.metadata.get(k) != v for k, v in filter.items()):
                    continue
                yield found
                count += 1
                if limit is not None and count >= limit:
                    return

    # -- threads as a whole ----------------------------------------------------------
    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(thread_id, None)
            for execution in self._executions_of(thread_id):
                self._retire(execution)

    def _retire(self, execution: dict[str, Any]) -> None:
        changes: dict[str, Any] = {"metadata": {**execution["metadata"], "deleted": True}}
        if execution["status"] == "running":
            changes["status"] = "cancelled"
        self.client.update_execution(execution["id"], **changes)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source = self._execution(source_thread_id)
        if source is None:
            return
        head = self.client.get_execution(source)["head_seq"]
        fork = self.client.fork_execution(source, head, metadata={THREAD: target_thread_id})
        with self._lock:
            self._threads[target_thread_id] = fork["id"]

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
            elif strategy == "keep_latest":
                self._keep_latest(thread_id)
            else:
                raise ValueError(f"unknown prune strategy {strategy!r}")

    def _keep_latest(self, thread_id: str) -> None:
        execution_id = self._execution(thread_id)
        if execution_id is None:
            return
        steps = self._steps(execution_id)
        latest: dict[str, dict[str, Any]] = {}
        for step in steps:
            if step["k"] == "checkpoint" and step["cid"] > latest.get(step["ns"], {}).get("cid", ""):
                latest[step["ns"]] = step
        kept = [
            s for s in steps
            if (s["k"] == "checkpoint" and latest.get(s["ns"]) is s)
            or (s["k"] == "writes" and s["cid"] == latest.get(s["ns"], {}).get("cid"))
        ]
        copies = []
        for step in kept:
            detail = self.client.get_step(execution_id, step["seq"], include="state")
            copy = {"kind": detail["kind"], "name": detail["name"], "metadata": detail["metadata"]}
            if step["k"] == "checkpoint":
                copy["state"] = detail["state"]
            copies.append(copy)
        with self._lock:
            old = self.client.get_execution(execution_id)
            fresh = self.client.create_execution(agent_id=AGENT, metadata={THREAD: thread_id})
            if copies:
                self.client.append_steps(fresh["id"], copies)
            self._retire(old)
            self._threads[thread_id] = fresh["id"]

    # -- async: the same work in a worker thread --------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await anyio.to_thread.run_sync(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await anyio.to_thread.run_sync(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await anyio.to_thread.run_sync(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await anyio.to_thread.run_sync(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await anyio.to_thread.run_sync(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await anyio.to_thread.run_sync(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await anyio.to_thread.run_sync(lambda: self.prune(thread_ids, strategy=strategy))


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
    }


def _wanted(step: dict[str, Any], configurable: dict[str, Any], before_id: str | None) -> bool:
    if "checkpoint_ns" in configurable and step["ns"] != configurable["checkpoint_ns"]:
        return False
    if configurable.get("checkpoint_id") and step["cid"] != configurable["checkpoint_id"]:
        return False
    return not (before_id and step["cid"] >= before_id)
