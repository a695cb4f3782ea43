"""The console in a real Chromium against a real server: sign in, board moves, live tail.

These drive the pages the way a person does (keyboard-reachable controls, the
forms on the cards) and write screenshots of every page at a laptop and a phone
width to ``tests/artifacts/``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import (
    CHROMEDRIVER,
    CHROMIUM,
    SKIP_REASON,
    ThreadedServer,
    axe_violations,
    chromium,
    screenshot,
    wait_for,
)
from conftest import ADMIN

from memory_service.config import Settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=SKIP_REASON),
]


@pytest.fixture(scope="module")
def server(settings: Settings, database_url: str) -> Iterator[ThreadedServer]:
    running = ThreadedServer(settings.with_(sse_heartbeat_seconds=0.5))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def live(server: ThreadedServer) -> str:
    return server.base


@pytest.fixture(scope="module")
def api(live: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def key(api: httpx.Client) -> dict[str, Any]:
    r = api.post("/v1/admin/tenants", json={"name": f"browser-{uuid.uuid4().hex[:6]}"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    body["headers"] = {"Authorization": f"Bearer {body['api_key']}"}
    return body


@pytest.fixture(scope="module")
def browser(live: str, key: dict[str, Any]) -> Iterator[Any]:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(live + "/console/tasks")
        assert "/console/login" in driver.current_url  # no session: sent to sign-in
        driver.find_element(By.ID, "api_key").send_keys(key["api_key"])
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for(lambda: driver.current_url.endswith("/console/tasks"))
        yield driver


def column_of(driver: Any, task_id: str) -> str | None:
    return driver.execute_script(
        "var c = document.getElementById('task-' + arguments[0]);"
        "return c && c.closest('ol.cards').getAttribute('data-status');",
        task_id,
    )


def move(driver: Any, task_id: str, label: str) -> None:
    from selenium.webdriver.common.by import By
    card = driver.find_element(By.ID, f"task-{task_id}")
    card.find_element(By.CSS_SELECTOR, "details.move-menu summary").click()  # the compact menu
    next(b for b in card.find_elements(By.CSS_SELECTOR, "form.move button") if b.text == label).click()


def watch_columns(driver: Any, task_id: str) -> None:
    """Records every column the card passes through, to see the optimistic move itself."""
    driver.execute_script(
        "window.__path = []; var id = 'task-' + arguments[0];"
        "new MutationObserver(function () { var c = document.getElementById(id);"
        " var s = c && c.closest('ol.cards').getAttribute('data-status');"
        " if (s && window.__path[window.__path.length - 1] !== s) window.__path.push(s); })"
        ".observe(document.querySelector('.board'), {childList: true, subtree: true});",
        task_id,
    )


def test_board_moves_a_task_and_rolls_back_a_refused_move(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    h = key["headers"]
    todo = api.post("/v1/tasks", json={"title": "Write the report", "priority": "high"}, headers=h)
    done = api.post("/v1/tasks", json={"title": "Ship release", "status": "completed"}, headers=h)
    stale = api.post("/v1/tasks", json={"title": "Review notes"}, headers=h)
    todo_id, done_id, stale_id = todo.json()["id"], done.json()["id"], stale.json()["id"]
    browser.get(live + "/console/tasks")

    move(browser, todo_id, "In progress")
    wait_for(lambda: column_of(browser, todo_id) == "in_progress")
    wait_for(lambda: "v2" in browser.find_element(By.ID, f"task-{todo_id}").text)
    assert api.get(f"/v1/tasks/{todo_id}", headers=h).json()["status"] == "in_progress"

    # a finished task may not go back to work: the service answers 409
    watch_columns(browser, done_id)
    move(browser, done_id, "In progress")
    card = wait_for(
        lambda: (c := browser.find_element(By.ID, f"task-{done_id}"))
        and "rolled-back" in (c.get_attribute("class") or "")
        and c
    )
    assert column_of(browser, done_id) == "completed"
    assert browser.execute_script("return window.__path") == ["in_progress", "completed"]
    notice = card.find_element(By.CSS_SELECTOR, ".card-notice").text
    assert notice == "Not moved: a completed task cannot go to in progress.", notice
    assert api.get(f"/v1/tasks/{done_id}", headers=h).json()["status"] == "completed"

    # the task changed since the board was drawn: 412, and the card shows it as it is now
    api.patch(f"/v1/tasks/{stale_id}", json={"title": "Review notes (edited)"}, headers=h)
    move(browser, stale_id, "Cancelled")
    card = wait_for(
        lambda: (c := browser.find_element(By.ID, f"task-{stale_id}"))
        and "changed meanwhile" in c.text
        and column_of(browser, stale_id) == "pending"
        and c
    )
    assert "Review notes (edited)" in card.text and "v2" in card.text, card.text
    assert stale_id not in card.text and "412" not in card.text, card.text
    assert api.get(f"/v1/tasks/{stale_id}", headers=h).json()["status"] == "pending"
    # the fresh card moves again from its new version
    move(browser, stale_id, "Cancelled")
    wait_for(lambda: column_of(browser, stale_id) == "cancelled")
    screenshot(browser, "tasks-refused-move")


def test_an_event_posted_over_the_api_shows_in_the_tail_within_a_second(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live + "/console/events")
    wait_for(lambda: "Live" in browser.find_element(By.ID, "live-state").text)
    for n in range(3):
        kind = f"agent.step{n}x{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        r = api.post("/v1/events", json={"items": [{"type": kind, "severity": "warn"}]}, headers=key["headers"])
        assert r.status_code == 201
        wait_for(lambda k=kind: k in browser.find_element(By.ID, "event-tail").text, timeout=5)
        assert time.monotonic() - started < 1.0


def test_every_page_renders_at_laptop_and_phone_width(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    h = key["headers"]
    api.post(
        "/v1/environments",
        json={"name": "production", "config": {"region": "eu-west"}, "secrets": {"DB_PASSWORD": "pw-never-shown"}},
        headers=h,
    )
    memory = api.post("/v1/memories", json={"content": "Ada prefers green tea in the morning", "user_id": "ada"}, headers=h).json()
    api.patch(f"/v1/memories/{memory['id']}", json={"content": "Ada prefers jasmine tea in the morning"}, headers=h)
    api.post("/v1/memories/search", json={"query": "tea", "k": 3}, headers=h)
    pages = {
        "tasks": "/console/tasks",
        "environments": "/console/environments",
        "events": "/console/events",
        "memories": "/console/memories?query=tea&mode=hybrid",
        "memory": f"/console/memories/{memory['id']}",
        "health": "/console/health",
        "executions": "/console/executions",
        "migration": "/console/migration",
    }
    for name, path in pages.items():
        browser.get(live + path)
        assert browser.find_elements(By.TAG_NAME, "h1"), (path, browser.page_source[:2000])
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert "pw-never-shown" not in browser.page_source
        for shot in screenshot(browser, name):
            assert shot.stat().st_size > 5000
    browser.get(live + "/console/health")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect.bar")
    # the skip link is the first stop of the keyboard
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"


def test_scrubbing_an_execution_timeline_shows_the_state_at_each_step(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    h = key["headers"]
    eid = api.post("/v1/executions", json={"agent_id": "planner"}, headers=h).json()["id"]
    steps = [
        {"kind": "llm", "name": "plan", "state": {"plan": ["fetch", "sum"], "done": []}},
        {"kind": "tool", "name": "fetch", "state": {"plan": ["fetch", "sum"], "done": ["fetch"]}},
        {"kind": "tool", "name": "sum", "error": {"message": "overflow"}, "state": {"done": ["fetch"], "retry": True}},
    ]
    assert api.post(f"/v1/executions/{eid}/steps", json={"steps": steps}, headers=h).status_code == 201
    browser.get(live + f"/console/executions/{eid}")

    def shown() -> tuple[str, str]:
        return (
            browser.find_element(By.ID, "state-seq").text,
            browser.find_element(By.ID, "state-json").text,
        )

    assert shown()[0] == "3" and '"retry": true' in shown()[1]
    scrubber = browser.find_element(By.ID, "scrubber")
    scrubber.send_keys(Keys.HOME)
    wait_for(lambda: shown() == ("0", "{}"))
    scrubber.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: shown()[0] == "1" and '"done": []' in shown()[1])
    assert browser.find_element(By.ID, "scrub-out").text == "1"
    browser.find_element(By.CSS_SELECTOR, 'ol.timeline a[data-seq="2"]').click()
    wait_for(lambda: shown()[0] == "2" and '"fetch"' in shown()[1].split('"done"')[1])
    assert scrubber.get_attribute("value") == "2"
    current = browser.find_element(By.CSS_SELECTOR, "ol.timeline li.current a")
    assert current.get_attribute("data-seq") == "2"
    browser.get(live + f"/console/executions/{eid}?at=2&diff_from=1&diff_to=3")
    assert browser.find_elements(By.CSS_SELECTOR, "ul.diff li.op-add")
    screenshot(browser, "execution")


def test_a_dry_run_migration_reports_then_runs(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    example = Path(__file__).parent.parent / "docs" / "examples" / "browser-storage.json"
    browser.get(live + "/console/migration")
    browser.find_element(By.ID, "export-file").send_keys(str(example.resolve()))
    browser.find_element(By.XPATH, "//button[text()='Dry run']").click()
    counts = wait_for(lambda: browser.find_element(By.ID, "dry-run-counts"))
    assert "tasks" in counts.text and "environments" in counts.text
    assert browser.find_element(By.ID, "dry-run-verdict").text
    assert "s3cr3t-staging" not in browser.page_source
    screenshot(browser, "migration-dry-run")
    before = api.get("/v1/environments", headers=key["headers"]).json()["items"]
    browser.find_element(By.XPATH, "//button[text()='Run the migration']").click()
    wait_for(lambda: browser.find_element(By.ID, "job-status").text == "completed", timeout=30)
    after = api.get("/v1/environments", headers=key["headers"]).json()["items"]
    assert len(after) > len(before)
    screenshot(browser, "migration-job")


def test_the_tail_reconnects_without_losing_events(
    browser: Any, server: ThreadedServer, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live + "/console/events?type=gap")
    state = browser.find_element(By.ID, "live-state")
    wait_for(lambda: "Live" in state.text)
    # every text the state line shows, however briefly: a fast reconnect can replace
    # "Reconnecting" before a poll of the page would see it
    browser.execute_script(
        "window.__states = []; var node = document.getElementById('live-state');"
        "new MutationObserver(function () { window.__states.push(node.textContent); })"
        ".observe(node, {childList: true, characterData: true, subtree: true});"
    )
    server.drop_connections()
    wait_for(lambda: any("Reconnecting" in t for t in browser.execute_script("return window.__states")))
    kinds = [f"gap.n{i}x{uuid.uuid4().hex[:6]}" for i in range(3)]
    for kind in kinds:  # written while the stream is down or just back
        r = api.post("/v1/events", json={"items": [{"type": kind}]}, headers=key["headers"])
        assert r.status_code == 201
    tail = browser.find_element(By.ID, "event-tail")
    wait_for(lambda: all(k in tail.text for k in kinds), timeout=15)
    assert all(tail.text.count(k) == 1 for k in kinds)  # each exactly once
    assert "Live" in state.text


def test_every_page_has_no_serious_accessibility_violations(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    """axe-core over every console page at a laptop and a phone width: no violation of
    serious or critical impact (contrast, names, labels, structure)."""
    h = key["headers"]
    api.post("/v1/tasks", json={"title": "Check contrast", "priority": "urgent", "tags": ["a11y"]}, headers=h)
    memory = api.post("/v1/memories", json={"content": "Ada likes green tea", "user_id": "ada"}, headers=h).json()
    api.patch(f"/v1/memories/{memory['id']}", json={"content": "Ada likes jasmine tea"}, headers=h)
    eid = api.post("/v1/executions", json={"agent_id": "planner"}, headers=h).json()["id"]
    steps = [{"kind": "llm", "name": "plan", "state": {"plan": ["a"]}},
             {"kind": "tool", "name": "a", "state_patch": [{"op": "add", "path": "/done", "value": ["a"]}]}]
    api.post(f"/v1/executions/{eid}/steps", json={"steps": steps}, headers=h)
    pages = [
        "/console/tasks", "/console/environments", "/console/events", "/console/executions",
        f"/console/executions/{eid}?at=2&diff_from=0&diff_to=2", "/console/memories?query=tea&mode=hybrid",
        f"/console/memories/{memory['id']}", "/console/health", "/console/migration",
    ]
    found: dict[str, list[str]] = {}
    for path in pages:
        browser.get(live + path)
        for width in (1280, 390):
            browser.set_window_size(width, 900)
            serious = [v for v in axe_violations(browser) if v.get("impact") in ("serious", "critical")]
            if serious:
                found[f"{path} @{width}"] = [
                    f"{v['id']}: {v['help']} ({len(v['nodes'])}x: "
                    f"{', '.join(str(n.get('target')) for n in v['nodes'][:3])})" for v in serious
                ]
    browser.set_window_size(1280, 900)
    with chromium() as fresh:  # the sign-in page, as a visitor sees it
        fresh.get(live + "/console/login")
        serious = [v for v in axe_violations(fresh) if v.get("impact") in ("serious", "critical")]
        if serious:
            found["/console/login"] = [f"{v['id']}: {v['help']}" for v in serious]
    assert not found, found


def test_the_pages_people_look_at_most_are_photographed(
    browser: Any, api: httpx.Client, live: str, key: dict[str, Any]
) -> None:
    """Screenshots of the board, an execution, a memory and health at 1280 and 390 px,
    saved to tests/artifacts/ for a person to look at (docs/images/ keeps copies)."""
    from selenium.webdriver.common.by import By

    h = key["headers"]
    for title, status, priority in [
        ("Draft the quarterly summary", "pending", "high"), ("Collect usage numbers", "in_progress", "medium"),
        ("Index the new documents", "completed", "low"), ("Import the old wiki", "failed", "urgent"),
    ]:
        api.post("/v1/tasks", json={"title": title, "status": status, "priority": priority,
                                    "tags": ["q4"]}, headers=h)
    eid = api.post("/v1/executions", json={"agent_id": "researcher"}, headers=h).json()["id"]
    steps = [
        {"kind": "llm", "name": "plan", "state": {"question": "What changed in Q4?", "plan": ["search", "read", "write"], "notes": []},
         "started_at": "2026-12-01T10:00:00Z", "ended_at": "2026-12-01T10:00:01.200Z"},
        {"kind": "tool", "name": "search", "state_patch": [{"op": "add", "path": "/notes/-", "value": "12 documents found"}],
         "started_at": "2026-12-01T10:00:01.200Z", "ended_at": "2026-12-01T10:00:03.900Z"},
        {"kind": "tool", "name": "read", "state_patch": [{"op": "add", "path": "/notes/-", "value": "revenue up 8%"}],
         "started_at": "2026-12-01T10:00:03.900Z", "ended_at": "2026-12-01T10:00:04.400Z"},
        {"kind": "llm", "name": "write", "state_patch": [{"op": "add", "path": "/answer", "value": "Revenue grew 8% in Q4."},
                                                        {"op": "replace", "path": "/plan", "value": []}],
         "started_at": "2026-12-01T10:00:04.400Z", "ended_at": "2026-12-01T10:00:06.000Z"},
    ]
    assert api.post(f"/v1/executions/{eid}/steps", json={"steps": steps}, headers=h).status_code == 201
    memory = api.post("/v1/memories", json={"content": "Ada prefers green tea in the morning",
                                            "user_id": "ada", "metadata": {"topic": "drinks"}}, headers=h).json()
    api.patch(f"/v1/memories/{memory['id']}", json={"content": "Ada prefers jasmine tea in the morning"}, headers=h)
    for path, name in [
        ("/console/tasks", "tasks"), (f"/console/executions/{eid}?at=2", "execution"),
        (f"/console/memories/{memory['id']}", "memory"), ("/console/health", "health"),
    ]:
        browser.get(live + path)
        assert browser.find_element(By.TAG_NAME, "h1").text
        for shot in screenshot(browser, f"look-{name}"):
            assert shot.stat().st_size > 5000
