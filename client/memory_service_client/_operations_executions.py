"""Executions (an agent run's steps and its time travel) as registered call builders."""

from __future__ import annotations

from typing import Any

from memory_service_client._core import Call, body, operation, query, segment

_E = "/v1/executions"


def _path(execution_id: str, rest: str = "") -> str:
    return f"{_E}/{segment(execution_id)}{rest}"


def _if_match(version: int | None) -> dict[str, str] | None:
    return None if version is None else {"If-Match": str(version)}


@operation("POST", _E)
def create_execution(**fields: Any) -> Call:
    """``fields``: task_id, environment_id, agent_id, metadata, status."""
    return Call("POST", _E, json=body(**fields))


@operation("GET", _E)
def list_executions(*, limit: int | None = None, cursor: str | None = None, **filters: Any) -> Call:
    """``filters``: task_id, agent_id, environment_id, status, parent_id,
    created_after, created_before."""
    return Call("GET", _E, query(limit=limit, cursor=cursor, **filters))


@operation("GET", _E + "/{execution_id}")
def get_execution(execution_id: str) -> Call:
    return Call("GET", _path(execution_id))


@operation("PATCH", _E + "/{execution_id}")
def update_execution(execution_id: str, *, if_match: int | None = None, **changes: Any) -> Call:
    return Call("PATCH", _path(execution_id), json=changes, headers=_if_match(if_match))


@operation("POST", _E + "/{execution_id}/steps")
def append_steps(execution_id: str, steps: list[dict[str, Any]]) -> Call:
    return Call("POST", _path(execution_id, "/steps"), json={"steps": steps})


@operation("GET", _E + "/{execution_id}/steps")
def list_steps(
    execution_id: str,
    *,
    after_seq: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call:
    params = query(after_seq=after_seq, limit=limit, cursor=cursor)
    return Call("GET", _path(execution_id, "/steps"), params)


@operation("GET", _E + "/{execution_id}/steps/{seq}")
def get_step(execution_id: str, seq: int, *, include: str | None = None) -> Call:
    return Call("GET", _path(execution_id, f"/steps/{int(seq)}"), query(include=include))


@operation("GET", _E + "/{execution_id}/state")
def get_execution_state(execution_id: str, at: int | str | None = None) -> Call:
    return Call("GET", _path(execution_id, "/state"), query(at=at))


@operation("GET", _E + "/{execution_id}/diff")
def diff_execution(
    execution_id: str,
    from_ref: int | str,
    to_ref: int | str | None = None,
    *,
    from_execution: str | None = None,
) -> Call:
    params = query(to=to_ref, from_execution=from_execution)
    params["from"] = from_ref
    return Call("GET", _path(execution_id, "/diff"), params)


@operation("POST", _E + "/{execution_id}/checkpoints")
def create_checkpoint(
    execution_id: str, label: str, *, seq: int | None = None, note: str | None = None
) -> Call:
    return Call(
        "POST", _path(execution_id, "/checkpoints"), json=body(label=label, seq=seq, note=note)
    )


@operation("GET", _E + "/{execution_id}/checkpoints")
def list_checkpoints(execution_id: str) -> Call:
    return Call("GET", _path(execution_id, "/checkpoints"))


@operation("DELETE", _E + "/{execution_id}/checkpoints/{label}")
def delete_checkpoint(execution_id: str, label: str) -> Call:
    return Call("DELETE", _path(execution_id, f"/checkpoints/{segment(label)}"), result="none")


@operation("POST", _E + "/{execution_id}/rollback")
def rollback_execution(execution_id: str, to: int | str) -> Call:
    return Call("POST", _path(execution_id, "/rollback"), json={"to": to})


@operation("POST", _E + "/{execution_id}/fork")
def fork_execution(
    execution_id: str,
    at: int | str,
    *,
    state_patch: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Call:
    payload = body(at=at, state_patch=state_patch, metadata=metadata)
    return Call("POST", _path(execution_id, "/fork"), json=payload)


@operation("GET", _E + "/{execution_id}/lineage")
def execution_lineage(execution_id: str) -> Call:
    return Call("GET", _path(execution_id, "/lineage"))


@operation("GET", _E + "/{execution_id}/replay")
def replay_execution(execution_id: str, **params: Any) -> Call:
    """``params``: from, to, speed (0: as fast as read)."""
    return Call("GET", _path(execution_id, "/replay"), query(**params))
