"""The main flow in both languages, on a desktop and on a 375 px phone: start a chat, watch an
answer stream and finish with its figures, regenerate it and browse to the new version, find
the conversation by search, stop a long answer with Esc. Selectors are ids and attributes,
never words, so one test walks all four; the words on screen are checked per language.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.support.app import App
from tests.support.browser import watch_problems

pytestmark = [pytest.mark.browser, pytest.mark.live]

WORDS = {
    "en-US": {"lang": "en", "figures": "First token", "send": "Send", "versions": "2 / 2"},
    "zh-CN": {"lang": "zh-hans", "figures": "首字延迟", "send": "发送", "versions": "2 / 2"},
}


@pytest.fixture(params=[("en-US", 1200), ("zh-CN", 1200), ("en-US", 375), ("zh-CN", 375)],
                ids=["en-desktop", "zh-desktop", "en-phone", "zh-phone"])  # fmt: skip
def setup(
    request: pytest.FixtureRequest, browser: Browser
) -> Iterator[tuple[Page, str, list[str]]]:
    locale, width = request.param
    context = browser.new_context(viewport={"width": width, "height": 780}, locale=locale)
    page = context.new_page()
    problems: list[str] = []
    watch_problems(page, problems)
    try:
        yield page, locale, problems
    finally:
        context.close()


def sidebar(page: Page) -> None:
    """On a phone the sidebar is folded behind its toggle: open it."""
    toggle = page.locator("button.sidebar__toggle")
    if toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false":
        toggle.click()


def test_the_main_flow_in_both_languages_on_desktop_and_phone(
    setup: tuple[Page, str, list[str]], app: App
) -> None:
    page, locale, problems = setup
    words = WORDS[locale]
    marker = f"flow{locale[:2]}{page.viewport_size['width'] if page.viewport_size else 0}"
    page.goto(app.url + "/")
    page.locator("form[action='/c/new/'] button[type=submit]").first.click()
    page.wait_for_selector('[data-connected="true"]')
    assert page.evaluate("document.documentElement.lang") == words["lang"]
    assert page.locator("#composer button[type=submit]").inner_text().strip() == words["send"]

    box = page.locator("#message")
    box.fill(f"Rivers and deltas {marker}\n#sim tokens=40 tps=80 ttft=0.1")
    box.press("Enter")
    page.wait_for_selector('article[data-role="assistant"][data-status="streaming"]')
    answer = page.locator('article[data-role="assistant"][data-status="complete"]')
    answer.wait_for(timeout=20000)
    assert words["figures"] in answer.locator("footer.stats").inner_text()

    page.locator(".btn--regenerate").click()
    versions = page.locator('nav.versions[data-version="2"][data-versions="2"]')
    versions.wait_for(timeout=20000)
    assert words["versions"] in versions.inner_text()

    sidebar(page)
    search = page.locator("#search-q")
    search.fill(marker)
    page.locator("#search-results mark").first.wait_for()

    box.fill(f"A long one {marker}\n#sim tokens=400 tps=20 ttft=0.05")
    box.press("Enter")
    page.wait_for_selector('article[data-role="assistant"][data-status="streaming"] .message__tail')
    time.sleep(0.5)
    page.locator("#message").press("Escape")
    page.wait_for_selector('article[data-role="assistant"][data-status="stopped"]', timeout=10000)

    width = page.viewport_size["width"] if page.viewport_size else 0
    assert page.evaluate("document.scrollingElement.scrollWidth") <= width  # no sideways scroll
    assert problems == []
