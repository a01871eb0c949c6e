"""A shared conversation's images in chromium: the owner sends a question with a picture and
shares the chat; a browser of someone else opens the link and sees the thumbnail load, opens
it full size, and loses it the moment the owner revokes the link."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.support.app import App
from tests.support.browser import desktop_tab
from tests.support.images import THUMBNAIL_LOADED, attach_picture

pytestmark = [pytest.mark.browser, pytest.mark.live]

FAST = "\n#sim tokens=20 tps=200 ttft=0.05"


def test_a_visitor_sees_the_picture_until_the_link_is_revoked(
    browser: Browser, vision_app: App, problems: list[str]
) -> None:
    with desktop_tab(browser, problems) as p, desktop_tab(browser, problems) as v:
        p.goto(vision_app.url + "/")
        p.get_by_role("button", name="Start a new chat").click()
        p.wait_for_selector('[data-connected="true"]')
        attach_picture(p)
        box = p.get_by_role("textbox", name="Message")
        box.fill("What colour is it? [t-share-image]" + FAST)
        box.press("Enter")
        answer = p.locator('article[data-role="assistant"]').last
        expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
        p.reload()  # the Share button belongs to a saved conversation's page
        p.get_by_role("button", name="Share", exact=True).click()
        panel = p.locator("[data-share-panel]")
        panel.get_by_role("button", name="Create link").click()
        item = panel.locator("[data-share-link][data-new]")
        url = item.get_by_role("textbox", name="Share link").input_value()

        v.goto(url)  # another browser: a context of its own, not signed in
        question = v.locator('article[data-role="user"]')
        expect(question).to_contain_text("What colour is it? [t-share-image]")
        # The model saw it too, and the visitor reads that it did.
        expect(v.locator('article[data-role="assistant"]')).to_contain_text("I received 1 image")
        thumbnail = question.get_by_role("img", name="Attached image 1")
        expect(thumbnail).to_be_visible()
        v.wait_for_function(THUMBNAIL_LOADED)
        src = thumbnail.get_attribute("src") or ""
        assert src.startswith(url.removeprefix(vision_app.url) + "images/"), src
        with v.context.expect_page() as opened:
            thumbnail.click()
        full = opened.value
        full.wait_for_load_state()
        assert full.url == vision_app.url + src
        assert v.context.request.get(vision_app.url + src).status == 200
        # The owner's own image URL is not the visitor's.
        own = src.split("/images/", 1)[1]
        assert v.context.request.get(f"{vision_app.url}/images/{own}").status == 404

        item.get_by_role("button", name="Revoke").click()
        item.wait_for(state="detached")
        assert v.context.request.get(vision_app.url + src).status == 404
        assert v.context.request.get(url).status == 404
        assert problems == []
