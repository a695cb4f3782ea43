"""Server-Sent Events: a line decoder and iterators that resume with ``Last-Event-ID``.

``SSEDecoder`` turns lines into messages as the WHATWG spec reads them (``data``
lines joined, ``id`` remembered, ``retry`` honoured, comments kept apart).
``EventStream`` and ``AsyncEventStream`` yield the decoded event objects of a
stream; when the connection drops they reconnect after the server's ``retry``
interval and send the last id they saw, so no event is lost or repeated.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from memory_service_client._core import Call, RetryPolicy
from memory_service_client._exceptions import error_for, wrap_transport


@dataclass(slots=True)
class Message:
    data: str
    id: str | None = None
    event: str = "message"


@dataclass(slots=True)
class SSEDecoder:
    last_event_id: str | None = None
    retry_ms: int | None = None
    comments: list[str] = field(default_factory=list)
    _data: list[str] = field(default_factory=list)
    _event: str = ""

    def feed(self, line: str) -> Message | None:
        """One line (without its end); a message when the line ends one."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = Message("\n".join(self._data), self.last_event_id, self._event or "message")
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


Reconnect = Callable[[], bool]


def _stream_headers(decoder: SSEDecoder) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if decoder.last_event_id is not None:
        headers["Last-Event-ID"] = decoder.last_event_id
    return headers


class EventStream:
    """Iterate decoded events; reconnects (up to ``retry.retries`` times in a row)."""

    def __init__(
        self,
        http: httpx.Client,
        call: Call,
        retry: RetryPolicy,
        last_event_id: str | None = None,
        read_timeout: float | None = 60.0,
    ) -> None:
        self._http, self._call, self._retry = http, call, retry
        self.decoder = SSEDecoder(last_event_id=last_event_id)
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._response: httpx.Response | None = None
        self._closed = False

    @property
    def last_event_id(self) -> str | None:
        return self.decoder.last_event_id

    def __iter__(self) -> Iterator[dict[str, Any]]:
        failures = 0
        while not self._closed:
            try:
                for event in self._once():
                    failures = 0
                    yield event
                if self._closed:
                    return
            except httpx.TransportError as exc:
                if self._closed:
                    return
                failures += 1
                if failures > self._retry.retries:
                    raise wrap_transport(exc) from exc
            time.sleep((self.decoder.retry_ms or 1000) / 1000)

    def _once(self) -> Iterator[dict[str, Any]]:
        request = self._http.build_request(
            "GET", self._call.path, params=self._call.params,
            headers=_stream_headers(self.decoder), timeout=self._timeout,
        )
        response = self._http.send(request, stream=True)
        self._response = response
        try:
            if response.status_code >= 400:
                response.read()
                raise error_for(response)
            for line in response.iter_lines():
                message = self.decoder.feed(line)
                if message is not None:
                    yield json.loads(message.data)
        finally:
            response.close()

    def close(self) -> None:
        self._closed = True
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream:
    """The async twin of ``EventStream``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        call: Call,
        retry: RetryPolicy,
        last_event_id: str | None = None,
        read_timeout: float | None = 60.0,
    ) -> None:
        self._http, self._call, self._retry = http, call, retry
        self.decoder = SSEDecoder(last_event_id=last_event_id)
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._response: httpx.Response | None = None
        self._closed = False

    @property
    def last_event_id(self) -> str | None:
        return self.decoder.last_event_id

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        failures = 0
        while not self._closed:
            try:
                async for event in self._once():
                    failures = 0
                    yield event
                if self._closed:
                    return
            except httpx.TransportError as exc:
                if self._closed:
                    return
                failures += 1
                if failures > self._retry.retries:
                    raise wrap_transport(exc) from exc
            await anyio.sleep((self.decoder.retry_ms or 1000) / 1000)

    async def _once(self) -> AsyncIterator[dict[str, Any]]:
        request = self._http.build_request(
            "GET", self._call.path, params=self._call.params,
            headers=_stream_headers(self.decoder), timeout=self._timeout,
        )
        response = await self._http.send(request, stream=True)
        self._response = response
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_for(response)
            async for line in response.aiter_lines():
                message = self.decoder.feed(line)
                if message is not None:
                    yield json.loads(message.data)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
