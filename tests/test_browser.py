"""The chat in a real browser: Debian's chromium driven by Playwright.

Skipped (with the reason in the summary) where chromium is not installed, unless
STREAMSIDE_REQUIRE_BROWSER=1 (as in CI), where a missing browser fails the run instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.answer_text import SAMPLE, normalized
from tests.support.app import App, start_app
from tests.support.browser import open_new_chat
from tests.support.processes import ROOT, stop_process
from tests.support.simulator import Simulator
from tests.support.waiting import until_sync

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_type_watch_it_grow_reload_and_find_it_in_history(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)

    box = p.get_by_role("textbox", name="Message")
    box.click()
    box.type("Tell me about rivers [t-browser]")
    box.press("Shift+Enter")  # a new line, not a send
    box.type("#sim tokens=120 tps=30 ttft=0.3 seed=7")
    assert box.input_value().count("\n") == 1
    box.press("Enter")

    answer = p.locator('article[data-role="assistant"]').last
    log = p.get_by_role("log")
    # The question is in the log, the answer is streaming and "Send" became "Stop".
    log.locator('article[data-role="user"]').filter(has_text="[t-browser]").wait_for()
    assert answer.get_attribute("data-status") == "streaming"
    p.get_by_role("button", name="Stop").wait_for()
    assert box.input_value() == ""  # the box was cleared once the server took the message
    nav = p.get_by_role("navigation", name="Conversations")
    nav.get_by_text("Tell me about rivers").wait_for()  # named after its first message, live

    # It grows while we watch.
    body = answer.locator(".message__tail")
    lengths = []
    deadline = time.monotonic() + 10
    while len(lengths) < 3 and time.monotonic() < deadline:
        text = answer.inner_text()
        if text and (not lengths or len(text) > lengths[-1]):
            lengths.append(len(text))
        time.sleep(0.25)
    assert len(lengths) == 3 and lengths[0] < lengths[1] < lengths[2]
    assert answer.get_attribute("data-status") == "streaming"
    # Finished paragraphs and headings are already markdown while the rest still streams in.
    answer.locator(".markdown p, .markdown h2, .markdown h3").first.wait_for()
    assert body.is_visible()

    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=30000)
    p.get_by_role("button", name="Send").wait_for()
    assert "tokens/s" in answer.inner_text()
    expected = simulator.request_for("[t-browser]")["text"]
    first_line = expected.strip().splitlines()[0].lstrip("#").strip()
    shown = answer.inner_text()
    assert first_line[:40] in shown

    # Reload: the answer is in the history, rendered, and the conversation is in the sidebar.
    p.reload()
    saved = p.locator('article[data-role="assistant"]').last
    assert saved.get_attribute("data-status") == "complete"
    assert first_line[:40] in saved.inner_text()
    assert "Tell me about rivers" in nav.inner_text()
    assert problems == []


def test_stop_in_the_browser_keeps_the_partial_answer(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    box = p.get_by_role("textbox", name="Message")
    box.fill("Long answer please [t-browser-stop]\n#sim tokens=400 tps=20 ttft=0.1")
    box.press("Enter")
    answer = p.locator('article[data-role="assistant"]').last
    answer.locator(".message__tail").filter(has_text=re.compile(r"\w+ \w+ \w+")).wait_for()
    p.get_by_role("button", name="Stop").click()
    try:
        p.wait_for_selector('article[data-role="assistant"][data-status="stopped"]')
    except Exception as exc:  # say what the page showed instead
        raise AssertionError(
            f"never stopped; the answer was: {answer.evaluate('e => e.outerHTML')}"
        ) from exc
    assert "Stopped." in answer.inner_text()
    assert p.get_by_role("button", name="Retry").is_visible()
    p.reload()
    assert p.locator('article[data-status="stopped"] .message__body').inner_text().strip()
    assert problems == []


def test_stream_off_shows_a_live_timer_then_the_whole_answer(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    with p.expect_response(lambda r: r.url.endswith("/settings/")):
        p.get_by_role("checkbox", name="Stream").uncheck()
    box = p.get_by_role("textbox", name="Message")
    box.fill("All at once [t-browser-off]\n#sim tokens=40 tps=40 ttft=0.3")
    box.press("Enter")
    answer = p.locator('article[data-role="assistant"]').last
    timer = answer.locator("[data-timer]")
    timer.wait_for()
    first = timer.inner_text()
    assert first.startswith("waiting… ")
    second = until_sync(  # it counts while we wait (it ticks every 0.1 s)
        lambda: (text := timer.inner_text()) != first and text, "the timer counting", within=1
    )
    assert second.startswith("waiting… ")
    assert float(second.split()[1]) > float(first.split()[1])
    assert answer.locator(".message__tail").inner_text() == ""  # no text before the end
    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=30000)
    assert simulator.request_for("[t-browser-off]")["stream"] is False
    assert "stream off" in answer.inner_text() and "tokens/s" in answer.inner_text()
    assert problems == []


def test_compare_streaming_on_and_off_as_a_stakeholder_sees_it(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    p.goto(app.url + "/compare/")
    p.wait_for_selector('[data-connected="true"]')
    assert "Measuring:" in p.locator(".compare__measuring").inner_text()
    p.get_by_role("button", name="Short question").click()
    assert "Australia" in p.get_by_role("textbox", name="Prompt").input_value()
    p.get_by_role("textbox", name="Prompt").fill(
        "Why stream? [t-browser-cmp]\n#sim tokens=60 tps=30 ttft=0.3"
    )
    p.get_by_role("button", name="Run", exact=True).click()

    on = p.locator('section[data-mode="stream"]')
    off = p.locator('section[data-mode="nostream"]')
    # The left pane reads while the right one still waits, its clock running.
    on.locator(".message__tail, .markdown").filter(has_text=re.compile(r"\w+ \w+")).first.wait_for()
    assert off.get_attribute("data-status") == "streaming"
    assert "waiting…" in off.inner_text()
    first = off.locator("[data-pane-timer]").inner_text()
    until_sync(  # its clock runs
        lambda: (
            float(off.locator("[data-pane-timer]").inner_text().split()[0])
            > float(first.split()[0])
        ),
        "the waiting pane's clock counting",
        within=1,
    )

    verdict = p.locator("[data-verdict]")
    verdict.wait_for(timeout=30000)
    assert on.get_attribute("data-status") == off.get_attribute("data-status") == "complete"
    assert re.search(
        r"reading began after [\d.]+ s instead of [\d.]+ s \(\d+× sooner\)", verdict.inner_text()
    )
    on_first = float(on.locator('[data-figure="first-text"]').inner_text().split()[0])
    off_first = float(off.locator('[data-figure="first-text"]').inner_text().split()[0])
    assert on_first < off_first
    assert p.locator("figure.chart svg").is_visible()
    # A reload shows the saved run at its permalink.
    assert re.search(r"/compare/\d+/$", p.url)
    p.reload()
    assert "reading began after" in p.locator("[data-verdict]").inner_text()
    assert problems == []


def test_thinking_streams_in_its_own_block_then_folds(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    with p.expect_response(lambda r: r.url.endswith("/settings/")):
        p.get_by_role("combobox", name="Model").select_option("qwq-plus")
    box = p.get_by_role("textbox", name="Message")
    box.fill("Think first [t-browser-think]\n#sim think=60 tokens=40 tps=25 ttft=0.2")
    box.press("Enter")
    answer = p.locator('article[data-role="assistant"]').last
    thinking = answer.locator("details.thinking")
    summary = thinking.locator("summary")
    # The thought streams first, in its own open block, with its own clock; no answer yet.
    thinking.locator(".thinking__body").filter(has_text=re.compile(r"\w+ \w+ \w+")).wait_for()
    assert thinking.get_attribute("open") is not None
    assert summary.inner_text().startswith("Thinking…")
    assert answer.locator(".message__tail").inner_text() == ""
    # When the answer begins the block folds and says how long the model thought.
    summary.filter(has_text="Thought for").wait_for(timeout=15000)
    p.wait_for_function(
        "() => !document.querySelector('article[data-status=\"streaming\"] details.thinking')"
        " || !document.querySelector('article[data-status=\"streaming\"] details.thinking').open"
    )
    p.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=30000)
    sent = simulator.request_for("[t-browser-think]")
    assert "First answer token" in answer.inner_text()
    summary.click()  # the reader can open it: the whole thought, as the model sent it
    assert thinking.get_attribute("open") is not None
    assert thinking.locator(".thinking__body").inner_text().strip() == sent["reasoning"].strip()
    p.reload()
    saved = p.locator('article[data-role="assistant"]').last.locator("details.thinking")
    assert saved.get_attribute("open") is None
    assert saved.locator("summary").inner_text().startswith("Thought for")
    assert problems == []


def test_sign_in_chat_and_sign_out_in_the_browser(
    browser: Browser, simulator: Simulator, tmp_path: Path, problems: list[str]
) -> None:
    """A team deployment: the chat is behind a sign-in page in the app's style (CSP-clean)."""
    app, process = start_app(
        tmp_path, {"LLM_API_BASE": simulator.base_url, "CHAT_REQUIRE_LOGIN": "1"}
    )
    try:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.contrib.auth.models import User; "
             "User.objects.create_user('ada', password='a-long-enough-passphrase-7')"],
            cwd=ROOT,
            env={**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{app.db_path}"},
            check=True,
            capture_output=True,
        )  # fmt: skip
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        p = context.new_page()
        p.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        p.goto(app.url + "/")
        assert "/accounts/login/" in p.url
        p.get_by_label("Username").fill("ada")
        p.get_by_label("Password").fill("wrong")
        p.get_by_role("button", name="Sign in").click()
        p.get_by_role("alert").filter(has_text="correct username and password").wait_for()
        p.get_by_label("Password").fill("a-long-enough-passphrase-7")
        p.get_by_role("button", name="Sign in").click()
        p.get_by_role("button", name="Start a new chat").click()
        p.wait_for_selector('[data-connected="true"]')
        assert "Signed in as ada" in p.locator(".sidebar__user").inner_text()
        box = p.get_by_role("textbox", name="Message")
        box.fill("Hello team [t-browser-login]\n#sim tokens=20 tps=60 ttft=0.1")
        box.press("Enter")
        p.wait_for_selector('article[data-role="assistant"][data-status="complete"]')
        p.get_by_role("button", name="Sign out").click()
        p.wait_for_url("**/accounts/login/")
        context.close()
    finally:
        stop_process(process)
    assert problems == []


def test_an_out_of_range_option_is_reported_and_blocks_nothing_else(
    page: Page, app: App, problems: list[str]
) -> None:
    """The server checks each setting on its own: the browser's own range check must not
    silently hold back the whole form (htmx validates forms before sending them)."""
    p = page
    open_new_chat(p, app)
    p.get_by_text("Options").click()
    temperature = p.get_by_label("Temperature")
    with p.expect_response(lambda r: r.url.endswith("/settings/")):
        temperature.fill("5")
        temperature.press("Tab")
    p.get_by_role("alert").filter(has_text="Temperature must be between 0 and 2.").wait_for()
    with p.expect_response(lambda r: r.url.endswith("/settings/")):
        p.get_by_role("combobox", name="Model").select_option("qwen-turbo")
    p.reload()
    assert p.get_by_role("combobox", name="Model").input_value() == "qwen-turbo"
    assert problems == []


def test_a_setting_changed_as_the_form_is_replaced_is_saved_too(
    page: Page, app: App, problems: list[str]
) -> None:
    """Each change replaces the settings form with the server's copy; a change made the moment
    the new form appears (a quick user, a script) is sent as well, not lost while htmx would
    wait to wire up the new form."""
    p = page
    open_new_chat(p, app)
    p.evaluate(
        """() => {
            const parent = document.getElementById('settings').parentElement;
            new MutationObserver((records, observer) => {
                const form = document.getElementById('settings');
                if (!records.some((r) => [...r.addedNodes].includes(form))) return;
                observer.disconnect();
                const model = form.querySelector('select[name=model]');
                model.value = 'qwen-turbo';
                model.dispatchEvent(new Event('change', {bubbles: true}));
            }).observe(parent, {childList: true});
        }"""
    )
    with p.expect_response(
        lambda r: r.url.endswith("/settings/") and "qwen-turbo" in (r.request.post_data or ""),
        timeout=10_000,
    ):
        p.get_by_role("checkbox", name="Stream").click()
    p.reload()
    assert p.get_by_role("combobox", name="Model").input_value() == "qwen-turbo"
    assert not p.get_by_role("checkbox", name="Stream").is_checked()
    assert problems == []


def test_a_reload_mid_answer_shows_the_prompt_and_the_answer_so_far_once(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    box = p.get_by_role("textbox", name="Message")
    box.fill("Reload me [t-browser-reload]\n#sim tokens=200 tps=40 ttft=0.1")
    box.press("Enter")
    answer = p.locator('article[data-role="assistant"][data-status="streaming"]')
    answer.wait_for()
    answer_id = int(str(answer.get_attribute("id")).removeprefix("message-"))
    p.wait_for_function(
        "(id) => document.getElementById(`answer-${id}-text`).textContent.length > 80",
        arg=answer_id,
    )
    before = p.evaluate(SAMPLE, answer_id)
    p.reload()
    p.wait_for_selector('[data-connected="true"]')
    after = p.evaluate(SAMPLE, answer_id)
    # Once each: the question, and the answer with at least what was shown before the reload.
    assert p.locator('article[data-role="user"]').filter(has_text="Reload me").count() == 1
    assert p.locator(f"#message-{answer_id}").count() == 1
    assert after["status"] == "streaming"
    assert len(normalized(after["shown"])) >= len(normalized(before["shown"]))
    samples = [after]
    deadline = time.monotonic() + 30
    while not samples[-1]["final"] and time.monotonic() < deadline:
        time.sleep(0.05)
        samples.append(p.evaluate(SAMPLE, answer_id))
    text = simulator.request_for("[t-browser-reload]")["text"]
    for sample in samples[:-1]:
        assert normalized(text).startswith(normalized(sample["shown"]))
    assert normalized(samples[-1]["final"]) == normalized(text)
    assert problems == []
