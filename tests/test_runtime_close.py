"""Shutdown always ends: a component that hangs while closing is logged and left behind."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from memory_service.infra import supervisor


async def test_a_hanging_component_does_not_stop_shutdown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "CLOSE_TIMEOUT_S", 0.2)
    closed: list[str] = []

    async def first() -> None:  # closes last: the order is the reverse of start
        closed.append("first")

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("broken")

    async def last() -> None:
        closed.append("last")

    closers: list[supervisor.Closer] = [first, hangs, fails, last]
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger=supervisor.__name__):
        await supervisor.close_all(closers)
    assert time.monotonic() - started < 5
    assert closed == ["last", "first"] and closers == []
    assert any("hangs" in r.getMessage() and "did not close" in r.getMessage() for r in caplog.records)
    assert any("error while closing" in r.getMessage() for r in caplog.records)
