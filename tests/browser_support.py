"""A real browser against a real server: the app under uvicorn in a thread, Chromium via Selenium.

The server runs on its own event loop in a background thread, so the blocking
Selenium calls of a test never stall it. Chromium is Debian's ``chromium`` with
the matching ``chromium-driver``; when either is missing the browser tests are
skipped with a loud reason (``.ci/run`` installs both first).
The helpers that drive a page: ``wait_for`` polls the browser until a condition
holds, ``screenshot`` photographs a page at several widths, ``axe_violations``
runs axe-core's WCAG checks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from api.app import create_app
from memory_service.config import Settings
from memory_service.embedding.embeddings import HashEmbedder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SKIP_REASON = (
    "BROWSER TESTS SKIPPED: Debian's chromium and chromium-driver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run does this)"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class ThreadedServer:
    """``create_app`` served by uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = ""
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        app = create_app(self.settings, embedder=HashEmbedder(384))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        try:
            asyncio.run(self._serve(self._server))
        except BaseException as exc:  # reported by start()
            self._error = exc

    async def _serve(self, server: uvicorn.Server) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve()

    def drop_connections(self) -> None:
        """Cut every open TCP connection, as a network blip would (streams included)."""
        server = self._server
        assert server is not None and self._loop is not None

        def cut() -> None:
            for connection in list(server.server_state.connections):
                connection.transport.close()  # type: ignore[attr-defined]

        self._loop.call_soon_threadsafe(cut)

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not (self._server and self._server.started):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("the console test server did not start") from self._error
            assert time.monotonic() < deadline, "the console test server did not start in time"
            time.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, widths: tuple[int, ...] = (1280, 390)) -> list[Path]:
    """The current page at each width (full height), into tests/artifacts/; fails when
    the page is wider than the window at any of them."""
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for width in widths:
        driver.set_window_size(width, 900)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(int(height), 700), 2400))
        # nothing wider than the window: a wide table or block scrolls inside itself
        wider = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wider <= 1, f"{name} at {width} px is {wider} px wider than the window"
        path = ARTIFACTS / f"{name}-{width}.png"
        driver.save_screenshot(str(path))
        paths.append(path)
    driver.set_window_size(1280, 900)
    return paths


def wait_for(condition: Any, timeout: float = 10.0) -> Any:
    """Polls ``condition`` until it is truthy; an element swapped out mid-read is a retry."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting in the browser"
        time.sleep(0.02)


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations on the current page, as axe reports them."""
    import importlib.util

    spec = importlib.util.find_spec("axe_selenium_python")
    assert spec and spec.origin, "axe-selenium-python (axe-core) is a test dependency"
    script = Path(spec.origin).parent / "node_modules" / "axe-core" / "axe.min.js"
    driver.execute_script(script.read_text())
    violations: list[dict[str, Any]] = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']},"
        " resultTypes: ['violations']}).then(function (r) { done(r.violations); },"
        " function (e) { done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]); });"
    )
    return violations
