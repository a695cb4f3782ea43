"""``Worker``: run Python functions as the ``task`` steps of the service's workflows.

Register one function per queue with ``@worker.task("queue")``; ``run()`` long-polls
``POST /v1/workers/claim`` for those queues, calls the function with the attempt's
input, heartbeats the lease in a background thread while it runs, and completes the
attempt with the return value (claiming the next attempts in the same request) or
fails it with the exception (``NonRetryable``: do not retry). SIGTERM and SIGINT stop the loop gracefully: the attempt in hand
finishes and is reported, and nothing more is claimed, so no attempt is lost (one
whose worker died is claimed again when its lease expires).

    worker = Worker(MemoryClient(url, key))

    @worker.task("tools")
    def fetch(payload):
        return {"summary": summarise(payload["url"])}

    worker.run()
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from memory_service_client._exceptions import APIError, ConflictError, TransportError
from memory_service_client._sync import MemoryClient

log = logging.getLogger(__name__)
Handler = Callable[[Any], Any]


class NonRetryable(Exception):
    """Raise from a task to fail its attempt without a retry."""


class Worker:
    def __init__(
        self,
        client: MemoryClient,
        *,
        worker_id: str | None = None,
        lease_s: float = 30.0,
        wait_s: float = 20.0,
        max_steps: int = 1,
    ) -> None:
        self.client = client
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.lease_s, self.wait_s, self.max_steps = lease_s, wait_s, max_steps
        self.handlers: dict[str, Handler] = {}
        self._stop = threading.Event()
        self.completed = 0
        self.failed = 0

    def task(self, queue: str) -> Callable[[Handler], Handler]:
        """Register ``fn(input) -> output`` for the ``task`` steps of ``queue``."""

        def register(fn: Handler) -> Handler:
            self.handlers[queue] = fn
            return fn

        return register

    def stop(self) -> None:
        """Finish the attempts in hand, then return from ``run``."""
        self._stop.set()

    def run(self, *, handle_signals: bool = True, max_attempts: int | None = None) -> None:
        """Claim and run attempts until ``stop()`` or a signal (or ``max_attempts``)."""
        if not self.handlers:
            raise ValueError("register a task with @worker.task(queue) first")
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        done = 0
        in_hand: list[dict[str, Any]] = []
        while not self._stop.is_set():
            if max_attempts is not None and done >= max_attempts:
                return
            if not in_hand:
                try:
                    claimed = self.client.claim(
                        self.worker_id,
                        sorted(self.handlers),
                        max_steps=self.max_steps,
                        lease_s=self.lease_s,
                        wait_s=self.wait_s,
                    )
                except TransportError as exc:
                    log.warning("claim failed: %s; retrying", exc)
                    self._stop.wait(1.0)
                    continue
                in_hand = list((claimed or {}).get("items", []))
            while in_hand:  # an attempt in hand always finishes
                attempt = in_hand.pop(0)
                done += 1
                # the last one in hand claims the next ones as it completes: one request a step
                more = not in_hand and (max_attempts is None or done < max_attempts)
                in_hand.extend(self._run_one(attempt, claim_next=more))

    def _next_claim(self) -> dict[str, Any] | None:
        if self._stop.is_set():
            return None
        return {
            "worker_id": self.worker_id,
            "queues": sorted(self.handlers),
            "max_steps": self.max_steps,
            "lease_s": self.lease_s,
        }

    def _run_one(self, attempt: dict[str, Any], *, claim_next: bool = False) -> list[dict[str, Any]]:
        """Run one attempt and report it; the attempts claimed with its completion."""
        beating = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(attempt, beating), daemon=True)
        beat.start()
        try:
            output = self.handlers[attempt["queue"]](attempt["input"])
        except Exception as exc:
            beating.set()
            beat.join()
            retryable = not isinstance(exc, NonRetryable)
            error = "".join(traceback.format_exception_only(exc)).strip()
            self._settle(self.client.fail_attempt, attempt, error, retryable)
            self.failed += 1
            return []
        beating.set()
        beat.join()
        claim = self._next_claim() if claim_next else None
        answer = self._settle(self.client.complete_attempt, attempt, output, claim)
        self.completed += 1
        return list((answer or {}).get("claimed") or [])

    def _heartbeat(self, attempt: dict[str, Any], done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                self.client.heartbeat(attempt["id"], attempt["lease_token"], self.lease_s)
            except (APIError, TransportError) as exc:
                log.warning("heartbeat of attempt %s failed: %s", attempt["id"], exc)

    def _settle(self, report: Callable[..., Any], attempt: dict[str, Any], *args: Any) -> Any:
        try:
            return report(attempt["id"], attempt["lease_token"], *args)
        except ConflictError as exc:  # the lease was lost: another worker has it now
            log.warning("attempt %s was not ours any more: %s", attempt["id"], exc)
            return None
