"""Replaying a saved comparison in chromium, and the presentation view: a real run against the
simulator, then its replay measured inside the page (``performance.now()`` from the press of
Replay to the first text), with no socket and the network off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, WebSocketRoute

from tests.support.app import App
from tests.support.browser import watch_problems
from tests.support.simulator import Simulator
from tests.support.waiting import until_sync

pytestmark = pytest.mark.live

TOLERANCE_MS = 50  # the acceptance criterion: the replay's first text within 50 ms

# Installed before the press: stamps the press (a capturing listener runs before replay.js's
# own) and, from the page's mutations, when each pane first shows text and what it showed then.
WATCH = """() => {
  const m = window.__replay = {press: null, onFirst: null, offFirst: null, offWaiting: null,
                               replaying: null};
  const textOf = (mode) => [...document.querySelectorAll(
      `#compare-run section[data-mode="${mode}"] :is(.message__tail, .markdown, .thinking__body)`)]
    .some((el) => el.textContent.trim() !== "");
  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-replay-button]")) m.press = performance.now();
  }, true);
  new MutationObserver(() => {
    if (m.press === null) return;
    const now = performance.now();
    if (m.onFirst === null && textOf("stream")) {
      m.onFirst = now - m.press;
      m.offWaiting = !textOf("nostream") &&
        document.querySelector('section[data-mode="nostream"]').innerText.includes("waiting…");
      m.replaying = document.getElementById("compare-run").hasAttribute("data-replay");
    }
    if (m.offFirst === null && textOf("nostream")) m.offFirst = now - m.press;
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@dataclass(frozen=True)
class SavedRun:
    url: str  # its page, /compare/<id>/
    state: Any  # the owner's cookies (Playwright storage state)
    export: dict[str, Any]  # /compare/<id>.json, once the browser's timings are in


@pytest.fixture(scope="module")
def saved_run(browser: Browser, app: App) -> Iterator[SavedRun]:
    """One real comparison run in chromium (streamed at 40 tokens/s, 0.3 s to the first), its
    timings reported by the page."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    problems: list[str] = []
    p = context.new_page()
    watch_problems(p, problems)
    p.goto(app.url + "/compare/")
    p.wait_for_selector('[data-connected="true"]')
    p.get_by_role("textbox", name="Prompt").fill(
        "Replay me [t-replay-run]\n#sim tokens=60 tps=40 ttft=0.3"
    )
    p.get_by_role("button", name="Run", exact=True).click()
    p.locator("[data-verdict]").wait_for(timeout=30000)
    until_sync(lambda: re.search(r"/compare/\d+/$", p.url), "the run's permalink")
    url = p.url

    def measured() -> dict[str, Any] | None:
        export: dict[str, Any] = p.request.get(url.rstrip("/") + ".json").json()
        rows = export["results"]
        return export if rows and all(r["measured_in_browser"] for r in rows) else None

    export = until_sync(measured, "the browser's timings saved")
    assert problems == []
    yield SavedRun(url=url, state=context.storage_state(), export=export)
    context.close()


@pytest.fixture
def owner(browser: Browser, saved_run: SavedRun) -> Iterator[BrowserContext]:
    """A tab of the run's owner (its session), whose sockets never reach the server."""
    context = browser.new_context(
        viewport={"width": 1200, "height": 800}, storage_state=saved_run.state
    )

    def unplugged(ws: WebSocketRoute) -> None:
        ws.close()  # not connected to the server: the replay must not need it

    context.route_web_socket(re.compile(r"/ws/"), unplugged)
    try:
        yield context
    finally:
        context.close()


def recorded(export: dict[str, Any], mode: str) -> dict[str, Any]:
    return next(r for r in export["results"] if r["mode"] == mode)


def test_a_replay_plays_at_the_recorded_pace_offline_and_without_a_model_call(
    owner: BrowserContext, saved_run: SavedRun, simulator: Simulator, problems: list[str]
) -> None:
    p = owner.new_page()
    watch_problems(p, problems)
    p.goto(saved_run.url)
    log = p.locator("#compare-run .pane__log")
    before = [log.nth(i).inner_text() for i in range(2)]
    requests_before = len(simulator.requests())
    owner.set_offline(True)  # the network is gone: the replay has all it needs in the page
    p.evaluate(WATCH)
    p.get_by_role("button", name="Replay", exact=True).click()

    label = p.locator("[data-replay-label]")
    label.wait_for()
    assert re.search(r"Replay of the run of .*\d{4}", label.inner_text())
    until_sync(lambda: p.evaluate("window.__replay.onFirst") is not None, "the first text")
    p.locator("#compare-run:not([data-replay])").wait_for(timeout=15000)  # the replay ended
    seen = p.evaluate("window.__replay")

    on, off = recorded(saved_run.export, "stream"), recorded(saved_run.export, "nostream")
    on_first_ms, off_done_ms = on["first_text_s"] * 1000, off["complete_s"] * 1000
    first_delta = seen["onFirst"] - on_first_ms
    off_delta = seen["offFirst"] - off_done_ms
    print(  # the figures the issue asks for, in the test log (pytest -s)
        f"replay first text {seen['onFirst']:.1f} ms vs recorded {on_first_ms:.1f} ms "
        f"(delta {first_delta:+.1f} ms); non-streamed landed {seen['offFirst']:.1f} ms vs "
        f"recorded complete {off_done_ms:.1f} ms (delta {off_delta:+.1f} ms)"
    )
    assert abs(first_delta) <= TOLERANCE_MS
    assert seen["offWaiting"] is True and seen["replaying"] is True
    # The non-streamed answer lands at once, near its recorded completion.
    assert abs(off_delta) <= TOLERANCE_MS
    # Both clocks stopped at their pane's completion; the panes end as the run did.
    timers = [p.locator("[data-pane-timer]").nth(i).inner_text() for i in range(2)]
    assert timers == [f"{on['complete_s']:.1f} s", f"{off['complete_s']:.1f} s"]
    assert [log.nth(i).inner_text() for i in range(2)] == before
    assert p.locator('section.pane[data-status="complete"]').count() == 2
    assert label.is_visible()  # still saying what was shown
    assert len(simulator.requests()) == requests_before  # no model call
    assert problems == []


def test_the_presentation_view_shows_clocks_and_chart_and_obeys_its_keys(
    owner: BrowserContext, saved_run: SavedRun, problems: list[str]
) -> None:
    p = owner.new_page()
    watch_problems(p, problems)
    p.goto(saved_run.url + "present/")
    assert "compare--present" in (p.locator("main").get_attribute("class") or "")
    timers = p.locator("[data-pane-timer]")
    assert timers.count() == 2 and all(timers.nth(i).is_visible() for i in range(2))
    assert float(timers.nth(0).inner_text().split()[0]) > 0
    assert p.locator("figure.chart svg").is_visible()
    keys = p.locator("[data-present-keys]").inner_text()
    assert "R replay" in keys and "run again" in keys and "Esc" in keys
    big = p.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('[data-pane-timer]')).fontSize)"
    )
    assert big >= 48  # readable from the back of the room

    p.keyboard.press("r")
    p.locator("#compare-run[data-replay]").wait_for()
    assert p.locator("[data-replay-label]").is_visible()
    p.locator("#compare-run:not([data-replay])").wait_for(timeout=15000)
    p.keyboard.press("Escape")
    p.wait_for_url(saved_run.url)
    assert problems == []


def test_the_presentation_view_runs_the_same_prompt_again_from_the_keyboard(
    page: Page, app: App, saved_run: SavedRun, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    p.context.add_cookies(saved_run.state["cookies"])
    p.goto(saved_run.url + "present/")
    p.wait_for_selector('[data-connected="true"]')
    seen = len([r for r in simulator.requests() if "[t-replay-run]" in str(r["messages"])])
    old = p.evaluate("location.pathname")  # before the key: the new address may come at once
    p.keyboard.press("n")
    new = until_sync(
        lambda: (path := p.evaluate("location.pathname")) != old and path,
        "a new run's presentation address",
    )
    assert re.fullmatch(r"/compare/\d+/present/", new)
    p.locator("[data-verdict]").wait_for(timeout=30000)
    again = [r for r in simulator.requests() if "[t-replay-run]" in str(r["messages"])]
    assert len(again) == seen + 2  # the same prompt, both sides
    assert problems == []
