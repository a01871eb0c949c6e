"""The chat in Chinese in a real browser (a zh-CN browser), then switched to English.

Skipped where Debian's chromium is missing, like tests/test_browser.py (the same fixtures).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.support.app import App
from tests.support.browser import watch_problems
from tests.support.simulator import Simulator
from tests.support.waiting import until_sync

# The .mo catalogue, built if missing.
pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.usefixtures("compiled")]
DONE = 'article[data-role="assistant"][data-status="complete"]'


@pytest.fixture
def chinese_page(browser: Browser, problems: list[str]) -> Iterator[Page]:
    """A browser whose language is Chinese (it sends Accept-Language: zh-CN)."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 800})
    page = context.new_page()
    watch_problems(page, problems)
    try:
        yield page
    finally:
        context.close()


def test_the_chat_in_chinese_then_switched_to_english(
    chinese_page: Page,
    app: App,
    simulator: Simulator,
    problems: list[str],
) -> None:
    p = chinese_page
    p.goto(app.url + "/")
    assert p.locator("html").get_attribute("lang") == "zh-hans"
    p.get_by_role("button", name="开始新对话").click()
    p.wait_for_selector('[data-connected="true"]')
    assert p.get_by_role("navigation", name="对话").is_visible()

    # A message streams, Stop shows while it does, and the figures are Chinese.
    box = p.get_by_role("textbox", name="消息")
    assert box.get_attribute("placeholder") == "随便问点什么。按 Enter 发送，Shift+Enter 换行。"
    box.fill("Tell me about rivers [t-browser-zh]\n#sim tokens=80 tps=40 ttft=0.3")
    box.press("Enter")
    answer = p.locator('article[data-role="assistant"]').last
    p.get_by_role("button", name="停止").wait_for()
    answer.locator(".message__tail, .markdown").filter(
        has_text=re.compile(r"\w+ \w+")
    ).first.wait_for()
    p.wait_for_selector(DONE, timeout=30000)
    p.get_by_role("button", name="发送").wait_for()
    figures = answer.locator("footer.stats").inner_text()
    assert re.search(r"首字延迟 [\d.]+ 秒", figures) and re.search(r"总用时 [\d.]+ 秒", figures)
    assert "token/秒" in figures and not re.search(r"[\d.]+ s\b", figures)
    assert simulator.request_for("[t-browser-zh]")["text"][:20] in answer.inner_text()

    # Stream off: the live timer counts in Chinese, with the words the page gave it.
    with p.expect_response(lambda r: r.url.endswith("/settings/")):
        p.get_by_role("checkbox", name="流式输出").uncheck()
    box.fill("All at once [t-browser-zh-off]\n#sim tokens=30 tps=40 ttft=0.8")
    box.press("Enter")
    waiting = p.locator('article[data-role="assistant"]').last.locator("[data-timer]")
    waiting.wait_for()
    first = waiting.inner_text()
    second = until_sync(  # it counts while we wait (it ticks every 0.1 s)
        lambda: (text := waiting.inner_text()) != first and text, "the timer counting", within=1
    )
    assert re.fullmatch(r"等待中… [\d.]+ 秒", first) and re.fullmatch(r"等待中… [\d.]+ 秒", second)
    assert float(second.split()[1]) > float(first.split()[1])
    p.wait_for_selector(f"{DONE} >> nth=1", timeout=30000)
    assert "流式输出关闭" in p.locator('article[data-role="assistant"]').last.inner_text()

    # Switch to English: the same page, in English, and it stays English after a reload.
    url = p.url
    with p.expect_navigation():
        p.get_by_role("button", name="English").click()
    assert p.url == url
    p.wait_for_selector('[data-connected="true"]')
    assert p.locator("html").get_attribute("lang") == "en"
    p.get_by_role("button", name="Send").wait_for()
    assert "First token" in p.locator('article[data-role="assistant"]').first.inner_text()
    p.reload()
    assert p.locator("html").get_attribute("lang") == "en"
    assert p.get_by_role("textbox", name="Message").is_visible()
    assert p.get_by_role("button", name="简体中文").is_enabled()  # the way back
    # The socket speaks English now too.
    box = p.get_by_role("textbox", name="Message")
    box.fill("And now in English [t-browser-en]\n#sim tokens=20 tps=60 ttft=0.1")
    box.press("Enter")
    p.wait_for_selector(f"{DONE} >> nth=2", timeout=30000)
    last = p.locator('article[data-role="assistant"]').last.inner_text()
    assert "stream off" in last and re.search(r"Total [\d.]+ s", last)
    assert problems == []
