"""Settings read from the environment: the HTTP server's loop and parser, and refusals."""

from __future__ import annotations

import pytest

from memory_service.config import Settings, SettingsError


def test_server_loop_and_parser_are_settings() -> None:
    default = Settings.from_env({})
    assert (default.http_loop, default.http_parser) == ("auto", "auto")
    plain = Settings.from_env({"MEMORY_HTTP_LOOP": "asyncio", "MEMORY_HTTP_PARSER": "h11"})
    assert (plain.http_loop, plain.http_parser) == ("asyncio", "h11")
    assert Settings.from_env({"MEMORY_TRACE_EXPORTER": "off"}).trace_exporter == "off"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEMORY_HTTP_LOOP", "trio"),
        ("MEMORY_HTTP_PARSER", "llhttp"),
        ("MEMORY_TRACE_EXPORTER", "zipkin"),
    ],
)
def test_unknown_choices_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
