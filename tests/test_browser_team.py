"""A team's browser behind a load balancer: two workers on PostgreSQL and Redis, a proxy that
sends each new websocket to the next worker, and a network blip mid-answer.

The page's socket drops, htmx reconnects by itself, the reconnect lands on the worker that is
not generating the answer, and the answer goes on growing from where the page was: at every
moment the text shown is a prefix of the model's text (nothing lost, nothing doubled), and it
ends identical to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.support.answer_text import SAMPLE, normalized
from tests.support.app import App
from tests.support.browser import watch_problems
from tests.support.proxy import RoundRobinProxy
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]


@pytest.fixture(scope="module")
def balancer(workers: tuple[App, App]) -> Iterator[RoundRobinProxy]:
    proxy = RoundRobinProxy([worker.port for worker in workers]).start()
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_dropped_socket_reconnects_to_the_other_worker_and_misses_nothing(
    browser: Browser,
    balancer: RoundRobinProxy,
    workers: tuple[App, App],
    simulator: Simulator,
) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    watch_problems(page, problems)
    try:
        page.goto(balancer.url + "/")
        page.get_by_role("button", name="Start a new chat").click()
        page.wait_for_selector('[data-connected="true"]')
        box = page.get_by_role("textbox", name="Message")
        box.fill("Across a blip [t-browser-blip]\n#sim tokens=300 tps=50 ttft=0.1")
        box.press("Enter")
        answer = page.locator('article[data-role="assistant"][data-status="streaming"]')
        answer.wait_for()
        answer_id = int(str(answer.get_attribute("id")).removeprefix("message-"))
        page.wait_for_function(
            "(id) => document.getElementById(`answer-${id}-text`).textContent.length > 60",
            arg=answer_id,
        )

        samples: list[dict[str, Any]] = [page.evaluate(SAMPLE, answer_id)]
        assert balancer.cut_websockets() == 1  # the blip
        deadline = time.monotonic() + 30
        while not samples[-1]["final"] and time.monotonic() < deadline:
            time.sleep(0.05)
            samples.append(page.evaluate(SAMPLE, answer_id))

        text = simulator.request_for("[t-browser-blip]")["text"]
        assert samples[-1]["status"] == "complete"
        assert normalized(samples[-1]["final"]) == normalized(text)
        live = [s for s in samples if s["status"] == "streaming"]
        for sample in live:  # at every moment: a prefix of the model's text, never doubled
            assert normalized(text).startswith(normalized(sample["shown"])), sample["shown"]
        lengths = [len(normalized(s["shown"])) for s in live]
        assert lengths == sorted(lengths)  # it never went back either
        lost = next(i for i, s in enumerate(samples) if s["connected"] == "false")
        before = len(normalized(samples[lost]["shown"]))
        back = [s for s in live if s["connected"] == "true" and samples.index(s) > lost]
        assert back and len(normalized(back[-1]["shown"])) > before  # it streamed live again

        sockets = [route for route in balancer.routes if route.websocket]
        assert [route.backend for route in sockets[:2]] == [w.port for w in workers]
        assert problems == []
    finally:
        context.close()
