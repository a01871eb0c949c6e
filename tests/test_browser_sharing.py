"""Share links in chromium, on a deployment that requires a sign-in: the owner shares a real
run and a real conversation from their pages; a browser without an account opens the link and
sees the run (both panes, the verdict) or the messages, and nothing else of the site: no
socket, no other page, no provider names unless the owner allowed them. Views count, revoking
and expiry close the link.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.app import App, start_app
from tests.support.app_shell import PASSWORD, create_users, in_app
from tests.support.browser import watch_problems
from tests.support.processes import stop_process
from tests.support.simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

QUICK = "#sim tokens=20 tps=200 ttft=0.05"
PROVIDER = "Acme Cloud"  # the provider's name, which a link shows only when allowed

# In the page: open a websocket and say how it ended, by its events ("open" or "closed").
TRY_SOCKET = """
(path) => new Promise((resolve) => {
  const socket = new WebSocket(`ws://${location.host}${path}`);
  socket.addEventListener("open", () => { socket.close(); resolve("open"); });
  socket.addEventListener("close", () => resolve("closed"));
})
"""


@pytest.fixture(scope="module")
def team(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app behind a sign-in, with two accounts: ada (the owner) and grace."""
    tmp: Path = tmp_path_factory.mktemp("sharing")
    instance, process = start_app(
        tmp,
        {
            "LLM_API_BASE": simulator.base_url,
            "LLM_PROVIDER_NAME": PROVIDER,
            "CHAT_REQUIRE_LOGIN": "1",
        },
    )
    try:
        create_users(instance, "ada", "grace")
        yield instance
    finally:
        stop_process(process)


def signed_in(browser: Browser, app: App, username: str, problems: list[str]) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    watch_problems(page, problems)
    page.goto(app.url + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/)"))
    return page


def create_link(page: Page, *, show_providers: bool = False, expires: str = "never") -> str:
    """Open the page's share panel, make a link, and read it back from the "Share link" box."""
    with page.expect_response(lambda r: "/s/" in r.url and r.request.method == "GET"):
        page.get_by_role("button", name="Share", exact=True).click()
    panel = page.locator("[data-share-panel]")
    before = panel.locator("[data-share-link]").count()
    panel.get_by_label("Link expires").select_option(expires)
    if show_providers:
        panel.get_by_label("Show provider names").check()
    panel.get_by_role("button", name="Create link").click()
    page.locator("[data-share-panel] [data-share-link][data-new]").wait_for()
    assert page.locator("[data-share-panel] [data-share-link]").count() == before + 1
    box = page.locator("[data-share-link][data-new]").get_by_role("textbox", name="Share link")
    assert box.get_attribute("readonly") is not None
    return box.input_value()


def views_shown(page: Page, url: str) -> int:
    """The views count the owner's panel shows for ``url`` (the panel loaded afresh)."""
    page.reload()
    with page.expect_response(lambda r: "/s/" in r.url and r.request.method == "GET"):
        page.get_by_role("button", name="Share", exact=True).click()
    item = page.locator(f'[data-share-link="{url}"]')
    return int(item.get_attribute("data-views") or "-1")


def anonymous(browser: Browser, problems: list[str]) -> tuple[BrowserContext, Page, list[str]]:
    """A fresh browser without an account; the sockets it opens are listed."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    watch_problems(page, problems)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    return context, page, sockets


def status_of(context: BrowserContext, url: str) -> int:
    return context.request.get(url, max_redirects=0).status


def test_a_run_shared_opens_without_an_account_and_shows_nothing_else(
    browser: Browser, team: App
) -> None:
    problems: list[str] = []
    owner = signed_in(browser, team, "ada", problems)
    owner.goto(team.url + "/compare/")
    owner.wait_for_selector('[data-connected="true"]')
    measured = owner.locator(".compare__measuring").get_attribute("data-measuring") or ""
    owner.get_by_role("textbox", name="Prompt").fill(f"Share me [t-share-run]\n{QUICK}")
    owner.get_by_role("button", name="Run", exact=True).click()
    owner.locator("[data-verdict]").wait_for(timeout=30000)
    run_id = owner.locator("#compare-run").get_attribute("data-run")
    stream_text = owner.locator('section[data-mode="stream"] .message__body.markdown').inner_text()
    nostream_text = owner.locator(
        'section[data-mode="nostream"] .message__body.markdown'
    ).inner_text()
    assert stream_text and nostream_text and PROVIDER in measured
    providers = [name.strip(" ·") for name in owner.locator(".message__provider").all_inner_texts()]
    assert PROVIDER in providers
    # Another thing of the owner's, which the link must not open: the pane's conversation.
    log_id = owner.locator('section[data-mode="stream"] [role="log"]').get_attribute("id") or ""
    chat_id = re.fullmatch(r"conversation-(\d+)-log", log_id)
    assert chat_id

    url = create_link(owner, expires="7d")
    assert re.fullmatch(re.escape(team.url) + r"/s/[\w-]{32}/", url)

    context, visitor, sockets = anonymous(browser, problems)
    try:
        response = visitor.goto(url)
        assert response is not None and response.status == 200
        assert response.headers["x-robots-tag"] == "noindex, nofollow"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "content-security-policy" in response.headers
        visitor.get_by_text("Shared comparison").wait_for()
        on = visitor.locator('section[data-mode="stream"]')
        off = visitor.locator('section[data-mode="nostream"]')
        assert on.locator(".message__body.markdown").inner_text() == stream_text
        assert off.locator(".message__body.markdown").inner_text() == nostream_text
        assert "reading began after" in visitor.locator("[data-verdict]").inner_text()
        robots = visitor.locator('meta[name="robots"]').get_attribute("content")
        assert robots == "noindex, nofollow"
        html = visitor.content()
        assert "ws-connect" not in html and "[data-connected]" not in html
        assert measured not in html and visitor.locator(".message__provider").count() == 0
        assert all(name not in html for name in providers)  # nor in the replay's data
        # The recorded run can be replayed there too (compare/_replay.html).
        assert visitor.get_by_role("button", name="Replay", exact=True).is_visible()
        assert visitor.get_by_role("button", name="Share", exact=True).count() == 0
        assert visitor.locator(f'a[href*="/compare/{run_id}"]').count() == 0
        # Nothing else of the site: not the run's socket, not its page, not another id.
        assert visitor.evaluate(TRY_SOCKET, f"/ws/compare/{run_id}/") == "closed"
        assert sockets == [f"ws://127.0.0.1:{team.port}/ws/compare/{run_id}/"]  # only ours
        for path in (f"/compare/{run_id}/", f"/c/{chat_id[1]}/", f"/compare/{run_id}.json"):
            answer = context.request.get(team.url + path, max_redirects=0)
            assert answer.status == 302 and "/accounts/login/" in answer.headers["location"]
    finally:
        context.close()

    # Signed in as someone else, the run's own pages are a 404; the link still opens.
    grace = signed_in(browser, team, "grace", problems)
    assert status_of(grace.context, f"{team.url}/compare/{run_id}/") == 404
    assert status_of(grace.context, f"{team.url}/s/run/{run_id}/") == 404
    token = grace.context.cookies(team.url)
    csrf = next(c["value"] for c in token if c["name"] == "csrftoken")
    refused = grace.context.request.post(
        f"{team.url}/s/run/{run_id}/new/",
        form={"expires": "never"},
        headers={"X-CSRFToken": csrf},
    )
    assert refused.status == 404
    link_id = in_app(
        team, f"from chat.models import ShareLink; print(ShareLink.objects.get(run_id={run_id}).pk)"
    ).strip()
    revoke = grace.context.request.post(
        f"{team.url}/s/links/{link_id}/revoke/", headers={"X-CSRFToken": csrf}
    )
    assert revoke.status == 404
    assert status_of(grace.context, url) == 200
    grace.context.close()

    # The owner sees the views (the anonymous visit and grace's), then revokes: a 404.
    assert views_shown(owner, url) == 2
    item = owner.locator(f'[data-share-link="{url}"]')
    item.get_by_role("button", name="Revoke").click()
    item.wait_for(state="detached")
    context, visitor, _ = anonymous(browser, [])
    try:
        assert status_of(context, url) == 404

        # A link past its expiry (moved there in the database) is the same 404.
        allowed = create_link(owner, show_providers=True)
        page = visitor.goto(allowed)
        assert page is not None and page.status == 200
        shown = visitor.content()  # the owner allowed the provider's name and host
        assert measured in shown
        assert PROVIDER in visitor.locator(".message__provider").first.inner_text()
        token = allowed.rstrip("/").rsplit("/", 1)[1]
        in_app(
            team,
            "from datetime import timedelta; from django.utils import timezone; "
            "from chat.models import ShareLink; "
            f"ShareLink.objects.filter(token={token!r})"
            ".update(expires_at=timezone.now() - timedelta(seconds=1))",
        )
        assert status_of(context, allowed) == 404
    finally:
        context.close()
        owner.context.close()
    # The one console error is the socket we tried on purpose, refused.
    refused_socket = [p for p in problems if f"/ws/compare/{run_id}/" in p and "403" in p]
    assert len(refused_socket) == 1
    assert [p for p in problems if p not in refused_socket] == []


def test_a_conversation_shared_shows_its_messages_without_the_composer(
    browser: Browser, team: App
) -> None:
    problems: list[str] = []
    owner = signed_in(browser, team, "ada", problems)
    owner.goto(team.url + "/")
    owner.get_by_role("button", name=re.compile(r"^(Start a new chat|New chat)")).first.click()
    owner.wait_for_selector('[data-connected="true"]')
    box = owner.get_by_role("textbox", name="Message")
    box.fill(f"Share this chat [t-share-chat]\n{QUICK}")
    box.press("Enter")
    answer = owner.locator('article[data-role="assistant"][data-status="complete"]')
    answer.wait_for(timeout=30000)
    text = answer.locator(".message__body.markdown").inner_text()
    url = create_link(owner)

    context, visitor, sockets = anonymous(browser, problems)
    try:
        response = visitor.goto(url)
        assert response is not None and response.status == 200
        visitor.get_by_text("Shared conversation").wait_for()
        assert (
            "Share this chat [t-share-chat]"
            in visitor.locator('article[data-role="user"]').inner_text()
        )
        shared = visitor.locator('article[data-role="assistant"]')
        assert shared.locator(".message__body.markdown").inner_text() == text
        assert visitor.get_by_role("textbox", name="Message").count() == 0
        for name in ("Send", "Edit", "Regenerate", "Retry", "New chat", "Share"):
            assert visitor.get_by_role("button", name=name, exact=True).count() == 0, name
        assert visitor.locator(".message__provider").count() == 0
        assert "ws-connect" not in visitor.content() and sockets == []
        assert visitor.locator('meta[name="robots"]').get_attribute("content") == (
            "noindex, nofollow"
        )
    finally:
        context.close()
    assert views_shown(owner, url) == 1
    owner.context.close()
    assert problems == []
