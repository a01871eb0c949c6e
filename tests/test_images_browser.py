"""Images in a real browser: attached with the button, pasted or dropped into the composer,
shown as chips that can be removed, sent with the message, answered by a model that sees
(the simulator says what it received) and shown as thumbnails in the question and the export."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.app import App
from tests.support.browser import desktop_tab
from tests.support.images import SVG, attach_picture, expect_picture_answered, picture
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

FAST = "\n#sim tokens=20 tps=200 ttft=0.05"

# Puts a file on the page as the clipboard or a drag would (a DataTransfer holding it).
GIVE_FILE = """([kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const box = document.getElementById("message");
  const options = { bubbles: true, cancelable: true };
  if (kind === "paste") {
    box.dispatchEvent(new ClipboardEvent("paste", { ...options, clipboardData: data }));
  } else {
    box.dispatchEvent(new DragEvent("dragover", { ...options, dataTransfer: data }));
    box.dispatchEvent(new DragEvent("drop", { ...options, dataTransfer: data }));
  }
}"""


@pytest.fixture
def vision_page(browser: Browser, vision_app: App, problems: list[str]) -> Iterator[Page]:
    """A fresh tab on the app whose models see (``vision_app``), in a new chat with its
    default model (qwen-vl-plus), its socket open."""
    with desktop_tab(browser, problems) as page:
        page.goto(vision_app.url + "/")
        page.get_by_role("button", name="Start a new chat").click()
        page.wait_for_selector('[data-connected="true"]')
        yield page


def _give(page: Page, kind: str, name: str, content_type: str, data: bytes) -> None:
    page.evaluate(GIVE_FILE, [kind, name, content_type, base64.b64encode(data).decode()])


def test_attach_send_and_see_what_the_model_received(
    vision_page: Page, vision_app: App, sim: Simulator, problems: list[str]
) -> None:
    p = vision_page
    attach_picture(p)
    box = p.get_by_role("textbox", name="Message")
    box.fill("What colour is it? [t-browser-attach]" + FAST)
    box.press("Enter")

    thumbnail = expect_picture_answered(p, "What colour is it? [t-browser-attach]")
    # Sent: the box is empty again.
    assert box.input_value() == ""
    entry = sim.request_for("[t-browser-attach]")
    assert entry["messages"][-1]["content"][1]["type"] == "image_url"

    # The export names the image where its owner can fetch it.
    url = p.url.rstrip("/") + "/export.md"
    markdown = p.request.get(url).text()
    src = thumbnail.get_attribute("src")
    assert src and f"![Attached image 1]({src})" in markdown
    assert p.request.get(vision_app.url + src).headers["content-type"] == "image/png"
    assert problems == []


def test_paste_and_drop_add_chips_remove_takes_one_away(
    vision_page: Page, sim: Simulator, problems: list[str]
) -> None:
    p = vision_page
    box = p.get_by_role("textbox", name="Message")
    box.fill("Which one is left? [t-browser-paste]" + FAST)
    _give(p, "paste", "pasted.png", "image/png", picture("PNG"))
    expect(p.get_by_role("button", name="Remove image")).to_have_count(1)
    _give(p, "drop", "dropped.jpg", "image/jpeg", picture("JPEG", size=(40, 30)))
    expect(p.get_by_role("button", name="Remove image")).to_have_count(2)

    # A refused file shows the composer's alert; the typed text and the chips stay.
    _give(p, "paste", "logo.svg", "image/svg+xml", SVG)
    expect(p.get_by_role("alert")).to_contain_text("SVG images are not accepted.")
    assert box.input_value().startswith("Which one is left?")
    expect(p.get_by_role("button", name="Remove image")).to_have_count(2)

    p.get_by_role("button", name="Remove image").first.click()  # the pasted PNG
    expect(p.get_by_role("button", name="Remove image")).to_have_count(1)
    box.press("Enter")

    answer = p.locator('article[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
    expect(answer).to_contain_text("I received 1 image (JPEG, 40×30)")
    question = p.locator('article[data-role="user"]').last
    expect(question.get_by_role("img")).to_have_count(1)
    entry = sim.request_for("[t-browser-paste]")
    parts = entry["messages"][-1]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # The refusal was an HTTP 400 (which chromium logs), and nothing else went wrong.
    assert problems == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
