"""Pushing one queued write of the replica to the service, resolving conflicts.

Creates go out as POST (the local id then aliases the service's id); updates and
deletes as PATCH and DELETE with ``If-Match`` of the version the edit started
from. A 412
carries the current entity, so the policy decides at once; a 404 means the
service deleted it. Any other 4xx is a write the service will never accept: it
is dropped, the local view goes back to the server's copy, and the callback
hears of it as outcome ``rejected``. A transport error or 5xx propagates as
``Offline`` and leaves the write queued.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from memory_service_client._replica_store import LocalStore, Pending
from memory_service_client.sync import Conflict, Policy, decide


class Replica(Protocol):
    """What pushing a queued write needs of the replica that queued it."""

    store: LocalStore
    policy: Policy

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

PATHS = {
    "memory": "/v1/memories",
    "task": "/v1/tasks",
    "environment": "/v1/environments",
    "execution": "/v1/executions",
}
MAX_TRIES = 3


def push_one(replica: Replica, item: Pending) -> list[Conflict]:
    if item.op == "create":
        return _create(replica, item)
    if item.op == "update":
        return _update(replica, item)
    return _delete(replica, item)


def _create(replica: Replica, item: Pending) -> list[Conflict]:
    response = replica._call("POST", PATHS[item.type], json=item.fields)
    if response.status_code not in (200, 201):
        return _rejected(replica, item, response)
    entity = response.json()
    store = replica.store
    with store.transaction() as db:
        store.dequeue(db, item.n)
        store.remove(db, item.type, item.id)
        store.apply_server(db, item.type, entity["id"], entity["version"], entity, None)
        store.set_meta(db, f"alias:{item.id}", entity["id"])
    return []


def _update(replica: Replica, item: Pending) -> list[Conflict]:
    fields, if_match = item.fields, item.base_version
    outcome: str | None = None
    server: dict[str, Any] | None = None
    for _ in range(MAX_TRIES):
        headers = {} if if_match is None else {"If-Match": f'"{if_match}"'}
        response = replica._call(
            "PATCH", f"{PATHS[item.type]}/{item.id}", json=fields, headers=headers
        )
        if response.status_code == 200:
            entity = response.json()
            _settle(replica, item, entity)
            if outcome is None:
                return []
            return [_conflict(replica, item, server, outcome, entity)]
        if response.status_code == 404:
            server = None
        elif response.status_code == 412:
            server = response.json()["current"]
        else:
            return _rejected(replica, item, response)
        decision = decide(replica.policy, "update", item.fields, item.base, server)
        if decision.send is None or server is None:
            _settle(replica, item, server)
            return [_conflict(replica, item, server, decision.outcome, server)]
        fields, if_match, outcome = decision.send, server["version"], decision.outcome
    return _rejected(replica, item, response)


def _delete(replica: Replica, item: Pending) -> list[Conflict]:
    path = f"{PATHS[item.type]}/{item.id}"
    if_match = item.base_version
    conflicts: list[Conflict] = []
    for _ in range(MAX_TRIES):
        headers = {} if if_match is None else {"If-Match": f'"{if_match}"'}
        response = replica._call("DELETE", path, headers=headers)
        if response.status_code in (204, 404):  # 404: the service deleted it already
            _settle(replica, item, None)
            return conflicts
        if response.status_code != 412:
            return _rejected(replica, item, response)
        current = response.json()["current"]
        decision = decide(replica.policy, "delete", {}, item.base, current)
        if not decision.delete:
            _settle(replica, item, current)
            return [_conflict(replica, item, current, decision.outcome, current)]
        conflicts = [_conflict(replica, item, current, decision.outcome, None)]
        if_match = current["version"]
    return _rejected(replica, item, response)


def _settle(replica: Replica, item: Pending, entity: dict[str, Any] | None) -> None:
    """The write is done with: the local view becomes the server's entity (or goes)."""
    store = replica.store
    with store.transaction() as db:
        store.dequeue(db, item.n)
        if entity is None:
            store.remove(db, item.type, item.id)
            return
        store.apply_server(db, item.type, item.id, entity["version"], entity, None)
        db.execute(
            "UPDATE entities SET body = coalesce(server, body) WHERE type = ? AND id = ?",
            (item.type, item.id),
        )


def _rejected(replica: Replica, item: Pending, response: httpx.Response) -> list[Conflict]:
    store = replica.store
    with store.transaction() as db:
        store.dequeue(db, item.n)
        found = store.get(item.type, item.id)
        server = found[1] if found else None
        if server is None:
            store.remove(db, item.type, item.id)
        else:
            db.execute(
                "UPDATE entities SET body = server WHERE type = ? AND id = ?",
                (item.type, item.id),
            )
    detail = response.json() if response.headers.get("content-type", "").endswith("json") else {}
    return [_conflict(replica, item, server, "rejected", {"problem": detail})]


def _conflict(
    replica: Replica,
    item: Pending,
    server: dict[str, Any] | None,
    outcome: str,
    result: dict[str, Any] | None,
) -> Conflict:
    return Conflict(
        type=item.type,
        id=item.id,
        policy=replica.policy,
        op=item.op,
        local=item.fields,
        server=server,
        outcome=outcome,
        result=result,
    )
