"""The blocking client's methods for runs of agents: recorded executions and workflows.

``MemoryClient`` inherits them; they are here so the client module stays
readable. Executions are the runs an agent records itself (steps, state,
checkpoints, forks, replay); workflows are the runs the service drives
(definitions, runs, signals) with the worker calls that execute their steps.
Each method builds its call and sends it through the client's ``_send``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from memory_service_client import _operations_executions as xo
from memory_service_client import _operations_workflows as wo
from memory_service_client._core import Call, RetryPolicy
from memory_service_client._sse import EventStream
from memory_service_client._types import Items, Page


class RunMethods:
    """Execution, workflow and worker operations of ``MemoryClient``."""

    if TYPE_CHECKING:
        _http: httpx.Client
        retry: RetryPolicy

        def _send(self, call: Call) -> Any: ...

        def _iterate(self, page: Callable[[str | None], Call]) -> Iterator[Any]: ...

    # -- executions ----------------------------------------------------------------------
    def create_execution(self, **fields: Any) -> dict[str, Any]:
        return self._send(xo.create_execution(**fields))

    def list_executions(self, **params: Any) -> Page[dict[str, Any]]:
        return self._send(xo.list_executions(**params))

    def iter_executions(self, *, page_size: int = 200, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._iterate(
            lambda cursor: xo.list_executions(limit=page_size, cursor=cursor, **filters)
        )

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        return self._send(xo.get_execution(execution_id))

    def update_execution(
        self, execution_id: str, *, if_match: int | None = None, **changes: Any
    ) -> dict[str, Any]:
        return self._send(xo.update_execution(execution_id, if_match=if_match, **changes))

    def append_steps(self, execution_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return self._send(xo.append_steps(execution_id, steps))

    def list_steps(self, execution_id: str, **params: Any) -> Page[dict[str, Any]]:
        return self._send(xo.list_steps(execution_id, **params))

    def iter_steps(self, execution_id: str, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        return self._iterate(
            lambda cursor: xo.list_steps(execution_id, limit=page_size, cursor=cursor)
        )

    def get_step(self, execution_id: str, seq: int, *, include: str | None = None) -> dict[str, Any]:
        return self._send(xo.get_step(execution_id, seq, include=include))

    def get_execution_state(self, execution_id: str, at: int | str | None = None) -> dict[str, Any]:
        return self._send(xo.get_execution_state(execution_id, at))

    def diff_execution(
        self, execution_id: str, from_ref: int | str, to_ref: int | str | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self._send(xo.diff_execution(execution_id, from_ref, to_ref, **kw))

    def create_checkpoint(self, execution_id: str, label: str, **fields: Any) -> dict[str, Any]:
        return self._send(xo.create_checkpoint(execution_id, label, **fields))

    def list_checkpoints(self, execution_id: str) -> Items[dict[str, Any]]:
        return self._send(xo.list_checkpoints(execution_id))

    def delete_checkpoint(self, execution_id: str, label: str) -> None:
        self._send(xo.delete_checkpoint(execution_id, label))

    def rollback_execution(self, execution_id: str, to: int | str) -> dict[str, Any]:
        return self._send(xo.rollback_execution(execution_id, to))

    def fork_execution(self, execution_id: str, at: int | str, **fields: Any) -> dict[str, Any]:
        return self._send(xo.fork_execution(execution_id, at, **fields))

    def execution_lineage(self, execution_id: str) -> dict[str, Any]:
        return self._send(xo.execution_lineage(execution_id))

    def replay_execution(
        self, execution_id: str, *, last_event_id: str | None = None, read_timeout: float | None = 60.0,
        **params: Any,
    ) -> EventStream:
        """The steps as Server-Sent Events (``from``, ``to``, ``speed``); resumable."""
        return EventStream(
            self._http, xo.replay_execution(execution_id, **params), self.retry, last_event_id,
            read_timeout,
        )

    # -- workflows and workers -------------------------------------------------------

    def put_workflow(self, name: str, definition: dict[str, Any]) -> Any:
        return self._send(wo.put_workflow(name, definition))

    def list_workflows(self, *, limit: int | None = None, cursor: str | None = None) -> Any:
        return self._send(wo.list_workflows(limit=limit, cursor=cursor))

    def get_workflow(self, name: str) -> Any:
        return self._send(wo.get_workflow(name))

    def get_workflow_version(self, name: str, version: int) -> Any:
        return self._send(wo.get_workflow_version(name, version))

    def start_run(self, name: str, input: Any = None, *, idempotency_key: str | None = None, version: int | None = None,) -> Any:
        return self._send(wo.start_run(name, input, idempotency_key=idempotency_key, version=version))

    def list_runs(self, *, limit: int | None = None, cursor: str | None = None, **filters: Any) -> Any:
        return self._send(wo.list_runs(limit=limit, cursor=cursor, **filters))

    def get_run(self, run_id: str) -> Any:
        return self._send(wo.get_run(run_id))

    def cancel_run(self, run_id: str) -> Any:
        return self._send(wo.cancel_run(run_id))

    def retry_run(self, run_id: str) -> Any:
        return self._send(wo.retry_run(run_id))

    def fork_run(self, run_id: str, from_step: str, input_patch: dict[str, Any] | None = None) -> Any:
        return self._send(wo.fork_run(run_id, from_step, input_patch))

    def signal_run(self, run_id: str, name: str, payload: Any = None) -> Any:
        return self._send(wo.signal_run(run_id, name, payload))

    def claim(self, worker_id: str, queues: list[str], *, max_steps: int = 1, lease_s: float = 30.0, wait_s: float = 0.0,) -> Any:
        return self._send(wo.claim(worker_id, queues, max_steps=max_steps, lease_s=lease_s, wait_s=wait_s))

    def heartbeat(self, attempt_id: str, lease_token: str, lease_s: float = 30.0) -> Any:
        return self._send(wo.heartbeat(attempt_id, lease_token, lease_s))

    def complete_attempt(
        self,
        attempt_id: str,
        lease_token: str,
        output: Any = None,
        claim: dict[str, Any] | None = None,
    ) -> Any:
        return self._send(wo.complete_attempt(attempt_id, lease_token, output, claim))

    def fail_attempt(self, attempt_id: str, lease_token: str, error: str, retryable: bool = True) -> Any:
        return self._send(wo.fail_attempt(attempt_id, lease_token, error, retryable))
