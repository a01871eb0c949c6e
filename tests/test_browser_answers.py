"""Answers in a real browser: highlighted code blocks, rendered tables, and the copy buttons
(on each code block, and on each finished answer) putting exactly the right text on the
clipboard, by mouse and by keyboard, live, after the final frame and after a reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

from tests.support.app import App
from tests.support.browser import ask_in_new_chat, copy_with, open_new_chat
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

CODE = (
    "def greet(name):\n"
    '    return f"<b>{name}</b>"  # <script>alert(1)</script>\n'
    "\n"
    "\n"
    "print(greet('river'))"
)
# The simulator's echo answers with the message itself (less the #sim line): the model's
# markdown is chosen here. After the code block, enough words to keep it streaming a while.
MESSAGE = (
    "Rivers in code [t-answers]:\n\n"
    f"```python\n{CODE}\n```\n\n"
    "| River | Length |\n| --- | --- |\n| Nile | 6,650 km |\n| Amazon | 6,400 km |\n\n"
    + " ".join(f"word{i}" for i in range(90))
    + ".\n#sim echo=1 tps=40 ttft=0.05"
)


def test_code_is_highlighted_and_the_copy_buttons_copy_code_and_answer(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    answer = ask_in_new_chat(p, app, MESSAGE)

    # Live: the finished code block is rendered, highlighted, with its own working button,
    # while the rest of the answer still streams in as raw text; no "Copy answer" yet.
    live_code = answer.locator(".markdown .codeblock")
    live_code.wait_for(timeout=15000)
    assert answer.get_attribute("data-status") == "streaming"
    assert answer.get_by_role("button", name="Copy answer").count() == 0
    assert copy_with(p, live_code.get_by_role("button", name="Copy code")) == CODE

    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=30000)
    sent = simulator.request_for("[t-answers]")["text"]
    assert sent.startswith("Rivers in code") and "```python" in sent

    for moment in ("final", "reloaded"):
        answer = p.locator('article[data-role="assistant"]').last
        block = answer.locator(".codeblock")
        assert block.count() == 1, moment
        assert block.get_attribute("data-lang") == "python"
        highlighted = block.locator("pre.highlight code span")
        assert highlighted.count() > 10, moment
        assert block.locator("span.k").first.inner_text() == "def"  # a keyword, classed
        assert block.locator("span.c1").inner_text().startswith("# <script>")  # text, inert
        assert answer.locator("script").count() == 0
        assert answer.locator(".markdown table td").filter(has_text="Amazon").count() == 1
        assert not answer.locator("[style]").count()  # the CSP forbids inline styles

        code_button = answer.get_by_role("button", name="Copy code")
        answer_button = answer.get_by_role("button", name="Copy answer")
        assert code_button.count() == 1 and answer_button.count() == 1, moment
        for button in (code_button, answer_button):
            assert button.get_attribute("type") == "button"
            assert button.is_visible()
        assert copy_with(p, code_button) == CODE, moment
        assert copy_with(p, answer_button, keyboard=True) == sent, moment  # the raw markdown
        # "Copied" is brief: the names come back.
        answer.get_by_role("button", name="Copy answer").wait_for(timeout=5000)
        answer.get_by_role("button", name="Copy code").wait_for(timeout=5000)
        p.reload()
        p.wait_for_selector('[data-connected="true"]')

    # The colours follow the system's scheme, from the stylesheet (no inline styles).
    pre = p.locator("pre.highlight").last
    background = "(el) => getComputedStyle(el).backgroundColor"
    p.emulate_media(color_scheme="light")
    assert pre.evaluate(background) == "rgb(248, 248, 248)"
    p.emulate_media(color_scheme="dark")
    assert pre.evaluate(background) == "rgb(13, 17, 23)"
    assert re.fullmatch(r"python", pre.evaluate(
        "(el) => getComputedStyle(el.parentElement, '::before').content.replaceAll('\"', '')"
    ))  # fmt: skip
    assert problems == []


def test_a_late_first_word_says_why_then_gives_way_to_the_answer(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    """The model server refuses once (rate limited) and is asked again: the page says so under
    the timer (a status, read out by screen readers), then shows the answer and no trace of
    the note."""
    p = page
    open_new_chat(p, app)
    box = p.get_by_role("textbox", name="Message")
    box.fill("Late [t-browser-retry]\n#sim fault=429 retry_after=1 fault_times=1 tokens=12")
    box.press("Enter")
    note = p.get_by_role("status").filter(has_text="asking again in 1 s (1 of 2)")
    note.wait_for()
    assert "HTTP 429" in note.inner_text()
    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]')
    sent = simulator.request_for("[t-browser-retry]")
    answer = p.locator('article[data-role="assistant"] .markdown').last
    assert answer.inner_text().split()[:3] == sent["text"].split()[:3]
    assert p.get_by_text("asking again").count() == 0
    assert problems == []
