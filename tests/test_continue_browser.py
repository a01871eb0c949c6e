"""Continue in a real browser: an answer cut at the length limit offers "Continue"; pressing
it makes the same answer grow, live, into one longer answer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page

from chat.generation.continuation import CONTINUE_PROMPT
from tests.support.app import App
from tests.support.browser import open_new_chat
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

SOURCE = "(a) => a.querySelector('template[data-answer-source]')?.content.textContent ?? null"


def continuation_of(simulator: Simulator, marker: str, timeout: float = 20.0) -> dict[str, Any]:
    """The continuation request of the conversation asked ``marker``, once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in reversed(simulator.requests()):
            messages = entry["messages"]
            asked = marker in messages[0]["content"] and entry["outcome"] != "streaming"
            if asked and messages[-1]["content"] == CONTINUE_PROMPT:
                return entry
        time.sleep(0.05)
    raise TimeoutError("the simulator saw no finished continuation")


def test_continue_grows_the_cut_answer(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    p.get_by_text("Options").click()
    limit = p.get_by_label("Max tokens")
    with p.expect_response(lambda response: "/settings/" in response.url):
        limit.fill("12")
        limit.dispatch_event("change")
    box = p.get_by_role("textbox", name="Message")
    box.fill("Tides, please [t-continue]\n#sim tokens=60 tps=100 ttft=0.05")
    box.press("Enter")

    answer = p.locator('article[data-role="assistant"]')
    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=20000)
    assert "Truncated" in answer.inner_text()
    cut = answer.evaluate(SOURCE)
    assert cut

    answer.get_by_role("button", name="Continue").click()
    more = continuation_of(simulator, "[t-continue]")["text"]
    assert more
    # The same article holds both parts, finished; no second answer was added.
    p.wait_for_function(
        f"(want) => {{ const a = document.querySelector('article[data-role=assistant]');"
        f" return a && a.dataset.status === 'complete' && ({SOURCE})(a) === want; }}",
        arg=cut + more,
        timeout=20000,
    )
    assert answer.count() == 1
    assert answer.inner_text().count("Tides") <= 1  # the question was not asked again
    # Cut again (the limit still holds), so it may go on once more.
    assert answer.get_by_role("button", name="Continue").is_visible()
    assert problems == []
