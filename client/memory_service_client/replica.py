"""An offline-first replica: a local SQLite copy of a tenant's entities that follows the
service's change feed and keeps working while the service is unreachable.

``Replica.sync()`` bootstraps from ``GET /v1/changes/snapshot`` the first time (and
again when the feed answers 410), pulls ``GET /v1/changes`` pages after its cursor,
then pushes queued writes. ``follow()`` does the same in a background thread and
then stays on ``GET /v1/changes/stream`` (resuming with ``Last-Event-ID``), pushing
the queue again after every reconnect. Reads (``get``, ``entities``, ``search``) answer
from the local copy; writes apply locally at once and are queued for the service
with ``If-Match``; conflicts are resolved by the policy (see ``sync``) and each is
passed to ``on_conflict``. Offline search ranks local embeddings exactly (or
matches keywords when only text is given) and says so in ``strategy``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sys
import threading
import uuid
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from memory_service_client._replica_push import PATHS, push_one
from memory_service_client._replica_store import LocalStore, Pending
from memory_service_client.sync import POLICIES, Conflict, Policy, sse_events

log = logging.getLogger(__name__)
PAGE = 5000


class Offline(Exception):
    """The service could not be reached (or answered 5xx); the replica keeps working."""


class Replica:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        path: str,
        *,
        types: Iterable[str] = ("memory", "task", "environment"),
        policy: Policy = "server_wins",
        on_conflict: Callable[[Conflict], None] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.types = [t for t in types]
        unknown = set(self.types) - set(PATHS)
        if unknown:
            raise ValueError(f"unknown entity types: {sorted(unknown)}")
        self.policy: Policy = policy
        self.on_conflict = on_conflict
        self.store = LocalStore(path)
        self.online = False
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: httpx.Response | None = None

    def close(self) -> None:
        self.stop_following()
        self._http.close()
        self.store.close()

    # -- following the service ----------------------------------------------------
    @property
    def cursor(self) -> str | None:
        return self.store.get_meta("cursor")

    def sync(self) -> bool:
        """Catch up with the feed, then push queued writes; False while offline."""
        try:
            self.pull()
            self.push()
        except Offline:
            self.online = False
            return False
        self.online = True
        return True

    def pull(self) -> int:
        """Apply every change after the cursor (a snapshot first, if needed)."""
        if self.cursor is None:
            self.bootstrap()
        applied = 0
        while True:
            params = {"since": self.cursor, "types": ",".join(self.types), "limit": PAGE}
            response = self._call("GET", "/v1/changes", params={**params, "include": "embedding"})
            if response.status_code == 410:
                self.bootstrap()
                continue
            response.raise_for_status()
            page = response.json()
            self._apply(page["items"], page["next_cursor"])
            applied += len(page["items"])
            if not page["has_more"]:
                return applied

    def bootstrap(self) -> int:
        """Replace the local copy with a snapshot (keeping unpushed edits on top)."""
        params = {"types": ",".join(self.types), "include": "embedding"}
        try:
            with self._http.stream("GET", "/v1/changes/snapshot", params=params) as response:
                _raise_offline(response)
                response.raise_for_status()
                lines = response.iter_lines()
                cursor = _json(next(lines))["cursor"]
                rows: list[dict[str, Any]] = []
                end: dict[str, Any] | None = None
                for line in lines:
                    item = _json(line)
                    if item.get("end"):
                        end = item
                    else:
                        rows.append(item)
        except httpx.TransportError as exc:
            raise Offline(str(exc)) from exc
        if end is None or end["count"] != len(rows):
            raise Offline("the snapshot was cut short")
        with self.store.transaction() as db:
            marks = ",".join("?" * len(self.types))
            db.execute(
                f"DELETE FROM entities WHERE type IN ({marks}) AND server IS NOT NULL AND "
                "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.type = entities.type "
                "AND o.id = entities.id)",
                self.types,
            )
            for row in rows:
                row["blob"] = _blob(row)
            self.store.apply_page(db, rows)
            self.store.set_meta(db, "cursor", cursor)
        return len(rows)

    def follow(self) -> None:
        """Follow the live stream in a background thread until ``stop_following``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow_loop, name="replica", daemon=True)
        self._thread.start()

    def stop_following(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _follow_loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self.sync():
                    backoff = 0.2
                    self._follow_stream()
            except (Offline, httpx.HTTPError):
                self.online = False
            except Exception:
                if self._stop.is_set():  # the stream was closed under us to stop
                    return
                # anything else (a malformed answer): say so, and keep following
                self.online = False
                log.exception("the replica could not follow the change feed; retrying")
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _follow_stream(self) -> None:
        params = {"types": ",".join(self.types), "include": "embedding"}
        headers = {"Last-Event-ID": self.cursor or ""}
        timeout = httpx.Timeout(10.0, read=90.0)
        try:
            with self._http.stream(
                "GET", "/v1/changes/stream", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code == 410:
                    self._forget_cursor()
                    return
                _raise_offline(response)
                response.raise_for_status()
                self._stream = response
                for event_id, item in sse_events(response.iter_lines()):
                    self._apply([item], event_id or item["cursor"])
                    if self._stop.is_set():
                        return
        except httpx.TransportError as exc:
            raise Offline(str(exc)) from exc
        finally:
            self._stream = None

    def _forget_cursor(self) -> None:
        # the next sync takes a snapshot
        with self.store.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'cursor'")

    def _apply(self, items: list[dict[str, Any]], cursor: str) -> None:
        for item in items:
            item["blob"] = _blob(item)
        with self.store.transaction() as db:
            self.store.apply_page(db, items)
            self.store.set_meta(db, "cursor", cursor)

    # -- reads --------------------------------------------------------------------
    def get(self, type_: str, id_: str) -> dict[str, Any] | None:
        found = self.store.get(type_, self.resolve_id(id_))
        return None if found is None else found[0] or None

    def entities(self, type_: str) -> list[dict[str, Any]]:
        return [body for body in self.store.all(type_) if body]

    def resolve_id(self, id_: str) -> str:
        """The service's id of an entity created offline (its local id until pushed)."""
        return self.store.get_meta(f"alias:{id_}") or id_

    def search(
        self,
        query: str | None = None,
        *,
        embedding: list[float] | None = None,
        k: int = 10,
        online: bool = True,
    ) -> dict[str, Any]:
        """The service's search when reachable, else the local copy's (``offline: true``)."""
        if online:
            body: dict[str, Any] = {"k": k}
            body.update({"embedding": embedding} if embedding is not None else {"query": query})
            try:
                response = self._call("POST", "/v1/memories/search", json=body)
                response.raise_for_status()
                return {**response.json(), "offline": False}
            except Offline:
                self.online = False
        return self.search_offline(query, embedding=embedding, k=k)

    def search_offline(
        self, query: str | None = None, *, embedding: list[float] | None = None, k: int = 10
    ) -> dict[str, Any]:
        if embedding is not None:
            scored = _exact_scan(self.store.embeddings(), embedding)
            strategy = "offline-exact"
        else:
            scored = _keyword_scan(self.entities("memory"), query or "")
            strategy = "offline-keyword"
        scored.sort(key=lambda pair: -pair[1])
        results = [{"memory": m, "score": s} for m, s in scored[:k]]
        return {"results": results, "strategy": strategy, "offline": True}

    # -- writes -------------------------------------------------------------------
    def create(self, type_: str, fields: dict[str, Any]) -> dict[str, Any]:
        local_id = f"local-{uuid.uuid4()}"
        with self.store.transaction() as db:
            self.store.put_local(db, type_, local_id, {**_visible(fields), "id": local_id})
            self.store.queue(db, Pending(0, type_, local_id, "create", None, None, fields))
        self._push_quietly()
        return self.get(type_, local_id) or {}

    def update(self, type_: str, id_: str, fields: dict[str, Any]) -> dict[str, Any]:
        id_ = self.resolve_id(id_)
        with self.store.transaction() as db:
            found = self.store.get(type_, id_)
            if found is None or not found[0]:
                raise KeyError(f"no {type_} {id_} in the replica")
            body, server = found
            pending = self.store.pending_for(db, type_, id_)
            merged = {**(pending.fields if pending else {}), **fields}
            op = pending.op if pending else "update"
            version = (server or {}).get("version")
            self.store.queue(db, Pending(0, type_, id_, op, version, server, merged))
            self.store.put_local(db, type_, id_, {**body, **_visible(fields)})
        self._push_quietly()
        return self.get(type_, id_) or {}

    def delete(self, type_: str, id_: str) -> None:
        id_ = self.resolve_id(id_)
        with self.store.transaction() as db:
            found = self.store.get(type_, id_)
            if found is None or not found[0]:
                raise KeyError(f"no {type_} {id_} in the replica")
            pending = self.store.pending_for(db, type_, id_)
            if pending is not None and pending.op == "create":
                self.store.dequeue(db, pending.n)
                self.store.remove(db, type_, id_)
            else:
                server = found[1]
                version = (server or {}).get("version")
                self.store.queue(db, Pending(0, type_, id_, "delete", version, server, {}))
                db.execute(
                    "UPDATE entities SET body = 'null' WHERE type = ? AND id = ?", (type_, id_)
                )
        self._push_quietly()

    def pending(self) -> list[Pending]:
        return self.store.outbox()

    def push(self) -> int:
        """Send queued writes in order; stops (keeping the rest) when the service is away."""
        pushed = 0
        with self._push_lock:
            for item in self.store.outbox():
                for conflict in push_one(self, item):
                    if self.on_conflict is not None:
                        self.on_conflict(conflict)
                pushed += 1
        return pushed

    def _push_quietly(self) -> None:
        try:
            self.push()
            self.online = True
        except Offline:
            self.online = False

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Offline(str(exc)) from exc
        _raise_offline(response)
        return response


def _raise_offline(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise Offline(f"the service answered {response.status_code}")


def _json(line: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(line)
    return value


def _blob(item: dict[str, Any]) -> bytes | None:
    encoded = item.get("embedding_b64")
    return None if encoded is None else base64.b64decode(encoded)


def _visible(fields: dict[str, Any]) -> dict[str, Any]:
    """What a local read shows of written fields (secret values stay in the queue)."""
    out = {k: v for k, v in fields.items() if k not in ("secrets", "embedding")}
    if "secrets" in fields:
        out["secrets"] = sorted(fields["secrets"])
    return out


def _exact_scan(
    rows: list[tuple[dict[str, Any], bytes]], query: list[float]
) -> list[tuple[dict[str, Any], float]]:
    q_norm = math.sqrt(sum(x * x for x in query)) or 1.0
    out = []
    for body, blob in rows:
        if not body:
            continue
        vector = array("f")
        vector.frombytes(blob)
        if sys.byteorder == "big":
            vector.byteswap()
        if len(vector) != len(query):
            continue
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        out.append((body, sum(a * b for a, b in zip(vector, query, strict=True)) / (norm * q_norm)))
    return out


def _keyword_scan(
    memories: list[dict[str, Any]], query: str
) -> list[tuple[dict[str, Any], float]]:
    words = {w for w in query.lower().split() if w}
    if not words:
        return []
    out = []
    for memory in memories:
        text = set(str(memory.get("content", "")).lower().split())
        hits = len(words & text)
        if hits:
            out.append((memory, hits / len(words)))
    return out
