"""Debian's chromium driven by Playwright, and the first steps most browser tests take (the
``browser``, ``page`` and ``problems`` fixtures in conftest.py are built from these).

Skipped (with the reason in the summary) where chromium is not installed, unless
STREAMSIDE_REQUIRE_BROWSER=1 (as in CI), where a missing browser fails the run instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from tests.support.app import App

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Chromium under Playwright, closed on the way out; skipped (or failed where a browser is
    required) if it is not installed."""
    if CHROMIUM is None:
        if os.environ.get("STREAMSIDE_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "chromium is required here (STREAMSIDE_REQUIRE_BROWSER=1) but not installed"
            )
        pytest.skip("browser tests need Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@contextlib.contextmanager
def desktop_tab(browser: Browser, problems: list[str]) -> Iterator[Page]:
    """A fresh desktop-sized tab in a context of its own (its cookies, its session), its
    problems collected in ``problems`` (``watch_problems``); the context closes on the way out."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        watch_problems(page, problems)
        yield page
    finally:
        context.close()


def watch_problems(page: Page, problems: list[str]) -> None:
    """Console errors (CSP violations among them) and uncaught exceptions seen on the page
    are appended to ``problems``; a test ends asserting it is empty."""
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))


def open_new_chat(page: Page, app: App) -> None:
    """A first visit: start a chat and wait until its socket is open (typing before would
    race the page's deferred scripts)."""
    page.goto(app.url + "/")
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_selector('[data-connected="true"]')


def ask_in_new_chat(page: Page, app: App, message: str) -> Locator:
    """Open a new chat (the clipboard allowed, for the copy buttons), send ``message`` and
    return the answer's article."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.url)
    open_new_chat(page, app)
    box = page.get_by_role("textbox", name="Message")
    box.fill(message)
    box.press("Enter")
    return page.locator('article[data-role="assistant"]').last


def clipboard(page: Page) -> str:
    text: str = page.evaluate("navigator.clipboard.readText()")
    return text


def copy_with(page: Page, button: Locator, *, keyboard: bool = False) -> str:
    """Clear the clipboard, press the button, wait for its "Copied", read the clipboard."""
    page.evaluate("navigator.clipboard.writeText('')")
    handle = button.element_handle()  # its name is about to change
    if keyboard:
        button.focus()
        page.keyboard.press("Enter")
    else:
        button.click()
    page.wait_for_function("(b) => b.getAttribute('aria-label') === 'Copied'", arg=handle)
    return clipboard(page)
