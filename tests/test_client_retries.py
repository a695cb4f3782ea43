"""Client retries: only idempotent calls, on 429/503 and lost answers, honouring Retry-After.

A real ``httpx.MockTransport`` answers here (httpx's own test seam): it counts the
requests a call makes and answers the statuses a busy service answers.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from memory_service_client import (
    MemoryClient,
    RateLimitedError,
    RetryPolicy,
    ServiceUnavailableError,
    SSEDecoder,
    TransportError,
)
from memory_service_client._core import retry_after_seconds

MEMORY = {
    "id": "m", "content": "c", "user_id": None, "agent_id": None, "run_id": None,
    "namespace": None, "metadata": {}, "importance": 0.5, "created_at": "t", "updated_at": "t",
    "expires_at": None, "version": 1,
}
FAST = RetryPolicy(retries=3, backoff=0.001, max_backoff=0.002)


def flaky(fail_times: int, status: int, retry_after: str | None = "0") -> tuple[list[str], Callable]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= fail_times:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            problem = {"type": "about:blank", "title": "busy", "status": status,
                       "detail": "busy", "trace_id": "0" * 32}
            return httpx.Response(status, json=problem, headers=headers)
        if request.url.path.endswith("/search"):
            return httpx.Response(200, json={"results": [], "took_ms": 1.0, "strategy": "exact"})
        return httpx.Response(200 if request.method != "POST" else 201, json=MEMORY)

    return seen, handler


def client(handler: Callable, retry: RetryPolicy = FAST) -> MemoryClient:
    return MemoryClient("http://service", "key", retry=retry, transport=httpx.MockTransport(handler))


def test_idempotent_reads_retry_on_429_and_503() -> None:
    seen, handler = flaky(2, 429)
    assert client(handler).get_memory("m")["id"] == "m"
    assert seen == ["GET", "GET", "GET"]
    seen, handler = flaky(1, 503)
    assert client(handler).delete_memory_by_key("ns", "k") is None
    assert seen == ["DELETE", "DELETE"]


def test_search_is_a_read_and_retries_but_an_add_never_does() -> None:
    seen, handler = flaky(1, 503)
    assert client(handler).search("q")["strategy"] == "exact"
    assert seen == ["POST", "POST"]
    seen, handler = flaky(1, 503)
    with pytest.raises(ServiceUnavailableError) as exc:
        client(handler).add_memory("c")
    assert seen == ["POST"] and exc.value.trace_id == "0" * 32
    seen, handler = flaky(1, 429)
    with pytest.raises(RateLimitedError):
        client(handler).update_memory("m", importance=0.2)
    assert seen == ["PATCH"]


def test_retries_stop_after_the_policy_and_a_long_retry_after_is_not_waited_for() -> None:
    seen, handler = flaky(10, 503)
    with pytest.raises(ServiceUnavailableError):
        client(handler).get_memory("m")
    assert len(seen) == 4  # the call and three retries
    seen, handler = flaky(1, 429, retry_after="3600")
    with pytest.raises(RateLimitedError):
        client(handler).get_memory("m")
    assert seen == ["GET"]


def test_a_lost_answer_is_retried_only_for_idempotent_calls() -> None:
    calls: list[str] = []

    def dropping(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json=MEMORY)

    assert client(dropping).get_memory("m")["id"] == "m" and calls == ["GET", "GET"]
    calls.clear()
    with pytest.raises(TransportError):
        client(dropping).add_memory("c")
    assert calls == ["POST"]


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    policy = RetryPolicy(backoff=1.0, max_backoff=4.0)
    waits = [policy.delay(attempt, None) or 0 for attempt in range(6)]
    assert all(0.5 <= w <= 4.0 for w in waits) and max(waits) > 1.0


def test_sse_decoder_joins_data_lines_and_remembers_ids_and_retry() -> None:
    decoder = SSEDecoder()
    lines = [": stream open", "retry: 2000", "", "id: 5", "data: {\"a\":", "data: 1}", "",
             "event: ping", "data: x", ""]
    messages = [m for line in lines if (m := decoder.feed(line)) is not None]
    assert [(m.id, m.event, m.data) for m in messages] == [
        ("5", "message", "{\"a\":\n1}"), ("5", "ping", "x")
    ]
    assert decoder.retry_ms == 2000 and decoder.comments == ["stream open"]
