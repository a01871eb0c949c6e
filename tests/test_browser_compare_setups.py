"""The timeout point in chromium: a long answer (8 s unstreamed; the long-essay preset takes
20-35 s, tests/test_live_compare_setups.py runs it) through a 5 s gateway timeout, chosen on
the form. The streamed pane completes; the other fails with the upstream's timeout wording, and
the verdict says which side the gateway cut and why. Also the "Compare" choice's fields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.app import App, running_app
from tests.support.browser import watch_problems
from tests.support.simulator import Simulator

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def plain_app(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app with its default idle read timeout (300 s): only the gateway's can cut."""
    env = {"LLM_API_BASE": simulator.base_url, "LLM_MODELS": "qwen-plus,qwen-turbo"}
    with running_app(tmp_path_factory.mktemp("timeout-point"), env) as instance:
        yield instance


@pytest.fixture
def tab(browser: Browser, plain_app: App, problems: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    watch_problems(page, problems)
    page.goto(plain_app.url + "/compare/")
    page.wait_for_selector('[data-connected="true"]')
    try:
        yield page
    finally:
        context.close()


def test_the_gateway_timeout_fails_the_silent_pane_and_the_streamed_one_completes(
    tab: Page, problems: list[str]
) -> None:
    tab.get_by_role("textbox", name="Prompt").fill(
        "A long answer, please.\n#sim tokens=400 tps=50 ttft=0.4"
    )
    tab.get_by_label("Gateway timeout").select_option("5")
    tab.get_by_role("button", name="Run", exact=True).click()
    streamed = tab.locator('section.pane[data-mode="stream"]')
    silent = tab.locator('section.pane[data-mode="nostream"]')
    expect(silent).to_have_attribute("data-status", "error", timeout=20000)
    expect(silent).to_contain_text("Request timed out, please try again later.")
    expect(streamed).to_have_attribute("data-status", "complete", timeout=20000)
    verdict = tab.locator("[data-verdict]")
    expect(verdict).to_contain_text(
        "Without streaming, the gateway's 5 s idle timeout cut the request before any answer "
        "arrived; with streaming, the answer kept the connection busy and finished in",
        timeout=10000,
    )
    expect(tab.locator(".compare__about")).to_contain_text("gateway timeout 5 s")
    assert problems == []


def test_the_compare_choice_shows_each_panes_setup_fields(tab: Page, problems: list[str]) -> None:
    setups = tab.locator("fieldset.compare__setups")
    expect(setups).to_be_hidden()
    tab.get_by_label("Compare").select_option("setups")
    expect(setups).to_be_visible()
    expect(tab.locator('select[name="model_b"]')).to_have_value("qwen-turbo")
    tab.get_by_label("Compare").select_option("streaming")
    expect(setups).to_be_hidden()
    assert problems == []
