"""The landing page's message box in a real browser: a new visitor types and presses Enter, and
the chat it starts answers, without any other click; the message is sent exactly once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.app import App
from tests.support.simulator import Simulator
from tests.support.waiting import throughout_sync

pytestmark = [pytest.mark.browser, pytest.mark.live]

FAST = "#sim tokens=20 tps=200 ttft=0.05"


def asked(simulator: Simulator, marker: str) -> list[dict[str, Any]]:
    """The simulator's requests whose last user message carries ``marker``."""
    found = []
    for entry in simulator.requests():
        users = [m for m in entry["messages"] if m["role"] == "user"]
        if users and marker in users[-1]["content"]:
            found.append(entry)
    return found


def test_enter_on_the_landing_starts_the_chat_and_sends_once(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    p.goto(app.url + "/")
    p.get_by_role("button", name="Start a new chat").wait_for()  # still offered
    box = p.get_by_role("textbox", name="Message")
    box.click()
    box.type("Tell me about lakes [t-landing]")
    box.press("Shift+Enter")  # a new line, not a send
    box.type(FAST)
    assert box.input_value().count("\n") == 1
    box.press("Enter")

    p.wait_for_url(re.compile(r"/c/\d+/$"))
    log = p.get_by_role("log")
    question = log.locator('article[data-role="user"]')
    question.filter(has_text="[t-landing]").wait_for()
    answer = p.locator('article[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
    assert answer.inner_text().strip()
    assert p.get_by_role("textbox", name="Message").input_value() == ""
    nav = p.get_by_role("navigation", name="Conversations")
    expect(nav).to_contain_text("Tell me about lakes")
    assert len(asked(simulator, "[t-landing]")) == 1

    # Neither Back and Forward (the page is not kept in the cache) nor a reload sends it again.
    p.go_back()
    p.wait_for_selector('[data-connected="true"]')
    p.go_forward()
    p.wait_for_selector('[data-connected="true"]')
    p.reload()
    p.wait_for_selector('[data-connected="true"]')
    throughout_sync(
        lambda: question.count() == 1 and len(asked(simulator, "[t-landing]")) == 1,
        "the landing's message was sent once",
        during=1.5,
    )
    assert p.get_by_role("textbox", name="Message").input_value() == ""
    assert problems == []


def test_an_empty_message_on_the_landing_starts_nothing(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    p.goto(app.url + "/")
    box = p.get_by_role("textbox", name="Message")
    box.press("Enter")  # nothing typed: nothing sent
    box.fill("   ")
    box.press("Enter")  # only spaces: not sent either
    assert p.url == app.url + "/"
    p.get_by_role("button", name="Send").click()  # sent anyway: the server refuses it
    expect(p.get_by_role("alert")).to_have_text("Type a message first.")
    nav = p.get_by_role("navigation", name="Conversations")
    expect(nav).to_contain_text("No conversations yet.")
    p.goto(app.url + "/")  # still the landing: no conversation was made
    expect(p.get_by_role("textbox", name="Message")).to_be_visible()
    expect(nav).to_contain_text("No conversations yet.")
    assert problems == []
