"""Images with the landing's first message: attached, pasted or dropped on the landing's box,
posted to ``/c/new/`` with the text, checked there as a send checks them (a refused image
creates nothing), kept with the pending message and sent with it, once, by the new chat's page.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.test import Client
from playwright.sync_api import Browser, Page, Route, expect
from pytest_django.fixtures import Settings

from chat.models import Attachment, Conversation
from tests.support.app import App
from tests.support.browser import desktop_tab
from tests.support.images import (
    SVG,
    attach_picture,
    expect_picture_answered,
    pick_picture,
    picture,
)
from tests.support.simulator import Simulator

CHIP = re.compile(r'data-image-id="([0-9a-f-]{36})"')
UNAVAILABLE = "That image is no longer available: attach it again."
FAST = "\n#sim tokens=20 tps=200 ttft=0.05"


def _uploaded(client: Client, fmt: str = "PNG") -> str:
    """Upload one picture as ``client``; the id its chip carries."""
    file = io.BytesIO(picture(fmt))
    file.name = f"photo.{fmt.lower()}"
    response = client.post("/images/upload/", {"image": file, "waiting": "0"})
    assert response.status_code == 200, response.content
    match = CHIP.search(response.content.decode())
    assert match
    return match.group(1)


def _chips(page: str) -> list[str]:
    """The ids of the chips in the page's composer (the landing's or the chat's), in order."""
    start = page.index('id="composer-images"')
    return CHIP.findall(page[start : page.index("</ul>", start)])


# --- The POST to /c/new/ ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_landing_has_the_attach_button_and_an_empty_chip_list(client: Client) -> None:
    page = client.get("/").content.decode()
    start = page.index('<form id="landing"')
    landing = page[start : page.index("</form>", start)]
    assert 'id="attach-images"' in landing and 'aria-label="Attach images"' in landing
    assert 'id="image-file"' in landing and 'data-upload-url="/images/upload/"' in landing
    assert _chips(page) == []


@pytest.mark.django_db
def test_the_images_are_kept_with_the_pending_message_and_sent_once(client: Client) -> None:
    first, second = _uploaded(client, "PNG"), _uploaded(client, "JPEG")
    response = client.post("/c/new/", {"message": "What are these?", "images": [second, first]})
    conversation = Conversation.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/c/{conversation.pk}/"
    assert not conversation.messages.exists()  # the socket saves it, as for any send
    assert Attachment.objects.filter(message__isnull=True).count() == 2  # still unsent

    page = client.get(f"/c/{conversation.pk}/")
    html = page.content.decode()
    assert 'data-pending-message="What are these?"' in html
    # In the composer as chips, in the order attached: their hidden inputs go with the send.
    assert _chips(html) == [second, first]
    assert f'<input type="hidden" name="images" value="{second}">' in html
    assert "no-store" in page["Cache-Control"]  # Back must not replay it from the cache

    again = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "data-pending-message" not in again
    assert _chips(again) == []


@pytest.mark.django_db
def test_a_text_only_first_message_still_has_no_chips(client: Client) -> None:
    client.post("/c/new/", {"message": "just words"})
    page = client.get(f"/c/{Conversation.objects.get().pk}/").content.decode()
    assert 'data-pending-message="just words"' in page
    assert _chips(page) == []


def _someone_elses(client: Client) -> str:
    return _uploaded(Client())  # another visitor's upload


def _already_sent(client: Client) -> str:
    image_id = _uploaded(client)
    other = Conversation.objects.create(model="qwen-plus", session_key="elsewhere")
    message = other.messages.create(role="user", content="sent before")
    Attachment.objects.filter(pk=image_id).update(message=message)
    return image_id


def _removed(client: Client) -> str:
    image_id = _uploaded(client)
    assert client.post(f"/images/{image_id}/remove/").status_code == 204
    return image_id


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param(_someone_elses, id="someone-elses"),
        pytest.param(_already_sent, id="already-sent"),
        pytest.param(_removed, id="removed"),
        pytest.param(lambda client: str(uuid.uuid4()), id="unknown"),
        pytest.param(lambda client: "not-a-uuid", id="malformed"),
    ],
)
def test_an_image_that_is_not_the_owners_to_send_creates_nothing(
    client: Client, bad_id: Callable[[Client], str]
) -> None:
    mine = _uploaded(client)
    refused = bad_id(client)
    before = Conversation.objects.count()
    response = client.post("/c/new/", {"message": "Look at this", "images": [mine, refused]})
    page = response.content.decode()
    assert response.status_code == 200
    assert f'<p class="alert" role="alert">{UNAVAILABLE}</p>' in page
    assert ">Look at this</textarea>" in page  # the text as typed
    assert _chips(page) == [mine]  # the owner's own upload is still there to send
    assert Conversation.objects.count() == before
    assert not Attachment.objects.filter(pk=mine, message__isnull=False).exists()


@pytest.mark.django_db
def test_more_images_than_allowed_creates_nothing(client: Client, settings: Settings) -> None:
    settings.CHAT_IMAGE_MAX_COUNT = 2
    ids = [_uploaded(client) for _ in range(3)]
    page = client.post("/c/new/", {"message": "three", "images": ids}).content.decode()
    assert "At most 2 images can go with one message." in page
    assert not Conversation.objects.exists()
    assert _chips(page) == ids[:2]


@pytest.mark.django_db
def test_a_refused_text_keeps_the_images_attached(client: Client) -> None:
    image_id = _uploaded(client)
    page = client.post("/c/new/", {"message": " ", "images": [image_id]}).content.decode()
    assert '<p class="alert" role="alert">Type a message first.</p>' in page
    assert _chips(page) == [image_id]
    assert not Conversation.objects.exists()


# --- In a real browser -----------------------------------------------------------------------


@pytest.fixture
def landing_page(browser: Browser, vision_app: App, problems: list[str]) -> Iterator[Page]:
    """A fresh visitor's tab on the landing of the app whose default model sees (qwen-vl-plus)."""
    with desktop_tab(browser, problems) as page:
        page.goto(vision_app.url + "/")
        yield page


PASTE = """([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  document.getElementById("message").dispatchEvent(
    new ClipboardEvent("paste", { bubbles: true, cancelable: true, clipboardData: data }));
}"""


@pytest.mark.browser
@pytest.mark.live
def test_the_first_message_goes_with_its_image(
    landing_page: Page, sim: Simulator, problems: list[str]
) -> None:
    p = landing_page
    expect(p.locator("form#landing")).to_be_visible()
    attach_picture(p)
    box = p.get_by_role("textbox", name="Message")
    box.fill("What colour is it? [t-landing-image]" + FAST)

    # A refused paste shows the landing's alert; the text and the chip stay.
    svg = base64.b64encode(SVG).decode()
    p.evaluate(PASTE, ["logo.svg", "image/svg+xml", svg])
    expect(p.get_by_role("alert")).to_contain_text("SVG images are not accepted.")
    expect(p.get_by_role("button", name="Remove image")).to_have_count(1)
    assert box.input_value().startswith("What colour is it?")

    box.press("Enter")
    p.wait_for_url(re.compile(r"/c/\d+/$"))
    question = p.locator('article[data-role="user"]')
    expect(question).to_have_count(1)
    expect_picture_answered(p, "What colour is it? [t-landing-image]")
    parts = sim.request_for("[t-landing-image]")["messages"][-1]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url"]

    # A reload sends nothing again: the next message is the second question, not a repeat.
    p.reload()
    p.wait_for_selector('[data-connected="true"]')
    expect(p.get_by_role("button", name="Remove image")).to_have_count(0)
    box.fill("And now? [t-landing-after]" + FAST)
    box.press("Enter")
    expect(p.locator('article[data-role="assistant"]')).to_have_count(2)
    expect(p.locator('article[data-role="assistant"]').last).to_have_attribute(
        "data-status", "complete", timeout=30000
    )
    expect(question).to_have_count(2)
    expect(question.last).to_contain_text("And now?")
    # The SVG's refusal was an HTTP 400 (which chromium logs), and nothing else went wrong.
    assert problems == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]


@pytest.mark.browser
@pytest.mark.live
def test_a_message_sent_while_its_image_uploads_waits_for_it(
    landing_page: Page, problems: list[str]
) -> None:
    p = landing_page
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)  # the upload waits until let through

    p.route("**/images/upload/", hold)
    pick_picture(p, "slow.png")
    expect(p.locator(".image-chip--loading")).to_have_count(1)
    box = p.get_by_role("textbox", name="Message")
    box.fill("Is it here? [t-landing-slow]" + FAST)
    box.press("Enter")
    expect(p.locator("form#landing[data-send-when-uploaded]")).to_have_count(1)

    held[0].continue_()
    p.wait_for_url(re.compile(r"/c/\d+/$"))
    answer = p.locator('article[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
    expect(answer).to_contain_text("I received 1 image (PNG, 64×48)")
    question = p.locator('article[data-role="user"]')
    expect(question.get_by_role("img", name="Attached image 1")).to_be_visible()
    assert problems == []
