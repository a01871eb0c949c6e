"""Conversation work in a real browser: edit and resend, regenerate and browse versions,
search, the Markdown export, delete and Undo. Each ends with no console or CSP error."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.app import App
from tests.support.browser import open_new_chat
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

FAST = "\n#sim tokens=12 tps=150 ttft=0.05"


def ask(p: Page, text: str) -> Locator:
    """Send a message from the composer and wait until its answer is finished."""
    done = p.locator('article[data-role="assistant"]:not([data-status="streaming"])')
    before = done.count()
    box = p.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(done).to_have_count(before + 1, timeout=30000)
    p.get_by_role("button", name="Send").wait_for()
    return p.locator('article[data-role="assistant"]').last


def test_edit_a_message_and_resend_it(page: Page, app: App, problems: list[str]) -> None:
    p = page
    open_new_chat(p, app)
    ask(p, "First question [t-b-edit-1]" + FAST)
    ask(p, "Second question [t-b-edit-2]" + FAST)
    ask(p, "Third question [t-b-edit-3]" + FAST)
    composer = p.get_by_role("textbox", name="Message")
    composer.fill("a draft I am still writing")

    second = p.locator('article[data-role="user"]').filter(has_text="[t-b-edit-2]")
    second.get_by_role("button", name="Edit", exact=True).click()
    editor = second.get_by_role("textbox", name="Edited text")
    expect(editor).to_be_focused()
    editor.fill("Changed my mind")
    editor.press("Escape")  # cancels: the message is as it was, the form gone
    expect(editor).to_be_hidden()
    expect(second.locator(".message__body")).to_have_text(re.compile(r"Second question"))
    expect(second.get_by_role("button", name="Edit", exact=True)).to_be_focused()

    second.get_by_role("button", name="Edit", exact=True).click()
    expect(editor).to_have_value(re.compile(r"^Second question"))
    editor.fill("Edited question [t-b-edit-4]\n#sim tokens=80 tps=40 ttft=0.2")
    editor.press("Enter")

    # The later turns are gone at once and the new answer streams where they were.
    users = p.locator('article[data-role="user"]')
    expect(users).to_have_count(2)
    expect(users.last).to_contain_text("Edited question [t-b-edit-4]")
    answer = p.locator('article[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-status", "streaming")
    p.get_by_role("button", name="Stop").wait_for()
    expect(p.get_by_role("log")).not_to_contain_text("[t-b-edit-3]")
    expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
    assert composer.input_value() == "a draft I am still writing"  # the draft survived
    p.reload()
    expect(p.locator('article[data-role="user"]')).to_have_count(2)
    expect(p.get_by_role("log")).not_to_contain_text("Second question")
    assert problems == []


def test_regenerate_twice_and_browse_the_versions(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    answer = ask(p, "Name a river [t-b-versions]" + FAST)
    counts = []
    for total in (2, 3):
        answer.get_by_role("button", name="Regenerate").click()
        answer = p.locator('article[data-role="assistant"]').last
        nav = answer.get_by_role("navigation", name="Versions of this answer")
        expect(nav).to_have_attribute("data-versions", str(total), timeout=30000)
        counts.append(nav.locator(".versions__count").inner_text())
    assert counts == ["2 / 2", "3 / 3"]
    expect(p.locator('article[data-role="assistant"]')).to_have_count(1)  # one answer, 3 versions

    def shown() -> str:
        nav = p.get_by_role("navigation", name="Versions of this answer")
        return nav.locator(".versions__count").inner_text()

    nav = p.get_by_role("navigation", name="Versions of this answer")
    expect(nav.get_by_role("button", name="Next version")).to_be_disabled()
    nav.get_by_role("button", name="Previous version").click()
    expect(nav.locator(".versions__count")).to_have_text("2 / 3")
    nav.get_by_role("button", name="Previous version").click()
    expect(nav.locator(".versions__count")).to_have_text("1 / 3")
    expect(nav.get_by_role("button", name="Previous version")).to_be_disabled()
    nav.get_by_role("button", name="Next version").click()
    expect(nav.locator(".versions__count")).to_have_text("2 / 3")
    p.reload()  # the chosen version is the saved one
    assert shown() == "2 / 3"
    # A new question: the earlier answer keeps its count but loses its buttons.
    ask(p, "And another? [t-b-versions-after]" + FAST)
    first = p.locator('article[data-role="assistant"]').first
    expect(first.locator(".versions__count")).to_have_text("2 / 3")
    expect(first.get_by_role("button", name="Previous version")).to_be_hidden()
    expect(first.get_by_role("button", name="Regenerate")).to_be_hidden()
    assert problems == []


def test_search_finds_a_conversation_by_a_word_in_an_answer(
    page: Page, app: App, simulator: Simulator, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    ask(p, "Tell me a story [t-b-search]\n#sim tokens=60 tps=200 ttft=0.05")
    text = simulator.request_for("[t-b-search]")["text"]
    words = sorted(set(re.findall(r"[A-Za-z]{7,}", text)), key=len, reverse=True)
    word = next(w for w in words if w.lower() not in "tell me a story [t-b-search]")
    found = p.url
    p.get_by_role("button", name="New chat").click()
    p.wait_for_selector('[data-connected="true"]')
    ask(p, "Something else entirely [t-b-search-2]\n#sim echo=1")

    p.get_by_role("searchbox", name="Search conversations").fill(word.upper())
    results = p.get_by_role("region", name="Search results")
    hit = results.get_by_role("listitem")
    expect(hit).to_have_count(1)
    expect(hit.locator("mark").first).to_have_text(re.compile(word, re.I))
    expect(hit.get_by_role("link")).to_contain_text("Tell me a story [t-b-search]")
    hit.get_by_role("link").click()
    p.wait_for_url(found)
    assert problems == []


def test_export_markdown_downloads_the_conversation(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    ask(p, "Export me [t-b-export]\n#sim echo=1")
    with p.expect_download() as waiting:
        p.get_by_role("link", name="Export as Markdown").click()
    download = waiting.value
    assert download.suggested_filename.endswith(".md")
    assert download.suggested_filename.startswith("export-me-t-b-export")
    text = download.path().read_text(encoding="utf-8")
    assert text.startswith("# Export me [t-b-export]")
    assert "## You\n\nExport me [t-b-export]" in text
    assert "## Answer (qwen-plus)" in text
    assert problems == []


def test_delete_then_undo_brings_the_conversation_back(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    ask(p, "Keep me [t-b-undo]" + FAST)
    url = p.url
    p.once("dialog", lambda dialog: dialog.accept())
    p.get_by_role("button", name="Delete").click()
    toast = p.get_by_role("status").filter(has_text="Deleted “Keep me [t-b-undo]")
    toast.wait_for()
    assert url != p.url
    nav = p.get_by_role("navigation", name="Conversations")
    expect(nav).not_to_contain_text("Keep me")
    toast.get_by_role("button", name="Undo").click()
    p.wait_for_url(url)
    expect(p.get_by_role("log")).to_contain_text("Keep me [t-b-undo]")
    expect(nav).to_contain_text("Keep me")
    p.reload()
    expect(p.get_by_role("status").filter(has_text="Deleted")).to_have_count(0)
    assert problems == []
