"""Formulas in a real browser: a streamed answer's TeX drawn as MathML by chromium once its block
is complete, still MathML after the final frame and a reload, with the TeX (never the drawn
text) in the copied answer and the Markdown and JSON exports."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

from tests.support.app import App
from tests.support.browser import ask_in_new_chat, copy_with
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

MATHML = "http://www.w3.org/1998/Math/MathML"
# The prompt asks about a formula, so the simulator's answer shows one (its ``math`` option):
# a paragraph with inline TeX, then a ``$$`` display block, then its usual prose.
MESSAGE = "What is the quadratic formula? [t-math]\n#sim tokens=220 tps=40 ttft=0.05 seed=3"


def test_a_streamed_formula_is_drawn_as_mathml_and_copied_as_tex(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    answer = ask_in_new_chat(p, app, MESSAGE)

    # Live: the display block is drawn once it is complete, while the answer still streams.
    display = answer.locator(".markdown .math-display math")
    display.wait_for(timeout=15000)
    assert answer.get_attribute("data-status") == "streaming"
    assert display.count() == 1
    assert display.locator("msup").count() >= 1  # drawn, not raw TeX
    live_tex = display.locator("annotation").text_content()

    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=30000)
    sent = simulator.request_for("[t-math]")["text"]
    tex = re.search(r"^\$\$\n(.+?)\n\$\$$", sent, re.M | re.S)
    assert tex, sent
    assert live_tex == tex.group(1)  # the live block held the whole formula

    for moment in ("final", "reloaded"):
        answer = p.locator('article[data-role="assistant"]').last
        formulas = answer.locator(".markdown math")
        assert formulas.count() >= 3, moment  # two inline, one display
        display = answer.locator(".markdown .math-display math")
        assert display.count() == 1, moment
        # Parsed as MathML (not unknown HTML elements), laid out by the browser.
        assert display.evaluate("(m) => m.namespaceURI") == MATHML, moment
        assert display.get_attribute("display") == "block"
        assert display.locator("msup").count() >= 1, moment  # b^2, or e^{-x^2}
        assert display.locator("annotation").text_content() == tex.group(1), moment
        box_of = display.bounding_box()
        assert box_of and box_of["height"] > 20, moment  # a fraction: taller than a line
        assert display.locator("annotation").bounding_box() is None  # the TeX is not drawn
        inline = answer.locator(".markdown p math").first
        assert inline.get_attribute("display") == "inline"
        assert inline.locator("msup").count() >= 1, moment  # ax^2
        assert answer.locator(".math-error").count() == 0
        assert not answer.locator("[style]").count(), moment  # the CSP forbids inline styles
        assert "$$" not in answer.locator(".markdown").inner_text(), moment

        # Copy answer: the TeX as the model wrote it, not the drawn formula's text.
        assert copy_with(p, answer.get_by_role("button", name="Copy answer")) == sent, moment
        p.reload()
        p.wait_for_selector('[data-connected="true"]')

    # The exports keep the TeX source as written.
    markdown = p.request.get(p.url + "export.md").text()
    assert sent.rstrip() in markdown and "<math" not in markdown
    exported = p.request.get(p.url + "export.json").json()
    assert exported["messages"][-1]["content"] == sent
    assert problems == []
