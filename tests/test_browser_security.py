"""Every page of a team deployment in a real browser: no Content-Security-Policy violation, no
console error, and no API key in anything the browser receives or the server logs, even with
the HTTP clients' debug logging on.

The upstream is the simulator requiring a key, so the key really travels (and a wrong answer
would show it was missing). The browser records every response body (pages, htmx partials,
static files, exports) and every websocket frame.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, WebSocket

from tests.support.app import App, start_app
from tests.support.processes import ROOT, stop_process
from tests.support.simulator import KEY, Simulator

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "a-long-enough-passphrase-7"

# Runs before any page script: every CSP violation is kept where the test can read it.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}`);
});
"""


@pytest.fixture(scope="module")
def keyed_team(
    keyed_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    tmp: Path = tmp_path_factory.mktemp("secure")
    env = {
        "LLM_API_BASE": keyed_simulator.base_url,
        "LLM_API_KEY": KEY,
        "CHAT_REQUIRE_LOGIN": "1",
        "CHAT_ALLOW_SIGNUP": "1",
        "LOG_LEVEL": "DEBUG",
        "LOG_HTTP_LEVEL": "DEBUG",
    }
    instance, process = start_app(tmp, env)
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.contrib.auth.models import User; "
         f"User.objects.create_superuser('root', 'root@example.com', {PASSWORD!r})"],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{instance.db_path}"},
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        yield instance
    finally:
        stop_process(process)


class Recorder:
    """What the browser received, and what went wrong on the page."""

    def __init__(self, page: Page) -> None:
        self.bodies: list[str] = []
        self.problems: list[str] = []
        page.on("response", self.response)
        page.on("websocket", self.websocket)
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.problems.append(str(error)))

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"{message.text} ({message.location['url']})")

    def response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.url}: HTTP {response.status}")
        try:
            self.bodies.append(response.body().decode("utf-8", "replace"))
        except Exception:  # a redirect has no body to read
            self.bodies.append(" ".join(f"{k}: {v}" for k, v in response.headers.items()))

    def websocket(self, socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: self.bodies.append(str(payload)))
        socket.on("framesent", lambda payload: self.bodies.append(str(payload)))


def visit(page: Page, url: str, recorder: Recorder) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    violations = page.evaluate("window.__csp")
    recorder.problems += [f"{url}: {v}" for v in violations]


def test_every_page_is_csp_clean_and_nothing_holds_the_key(
    browser: Browser, keyed_team: App, keyed_simulator: Simulator
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    seen = Recorder(page)
    base = keyed_team.url
    try:
        visit(page, base + "/accounts/signup/", seen)
        visit(page, base + "/", seen)  # the sign-in page
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Start a new chat").click()
        page.wait_for_selector('[data-connected="true"]')
        box = page.get_by_role("textbox", name="Message")
        box.fill("Keyed [t-secure]\n#sim tokens=40 tps=100 ttft=0.05")
        box.press("Enter")
        page.wait_for_selector('article[data-role="assistant"][data-status="complete"]')
        assert keyed_simulator.request_for("[t-secure]")["text"]  # the key was accepted
        chat = page.url
        visit(page, chat, seen)
        visit(page, chat + "export.json", seen)

        visit(page, base + "/compare/", seen)
        page.wait_for_selector('[data-connected="true"]')
        page.get_by_role("textbox", name="Prompt").fill(
            "Compare keyed [t-secure-cmp]\n#sim tokens=20 tps=100 ttft=0.05"
        )
        page.get_by_role("button", name="Run", exact=True).click()
        page.locator("[data-verdict]").wait_for(timeout=30000)
        run = page.url
        for path in ("/compare/history/", "/usage/", "/accounts/password/", "/admin/",
                     "/admin/chat/provider/", "/admin/chat/dailyusage/"):  # fmt: skip
            visit(page, base + path, seen)
        for suffix in (".json", ".csv"):
            seen.bodies.append(page.request.get(run.rstrip("/") + suffix).text())
        visit(page, run, seen)
        page.goto(chat)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/accounts/login/")
    finally:
        context.close()
    assert seen.problems == []
    received = "\n".join(seen.bodies)
    assert "Compare keyed" in received and "/static/" in received  # the scan saw real content
    assert len(re.findall(r"htmx", received)) > 0  # static files included
    for text in (received, keyed_team.log()):
        assert KEY not in text and KEY[:12] not in text
    assert " DEBUG " in keyed_team.log()  # the scan covered debug logging


HOSTILE = (
    "Hostile [t-hostile]\n"
    "<script>window.__pwned = 'script'</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 'img'\">\n\n"
    '<a hx-get="/c/new/" hx-trigger="load" href="#">htmx</a>\n\n'
    "[a link](javascript:window.__pwned='link') and <a href=\"javascript:alert(1)\">raw</a>\n\n"
    "![tracker](http://offsite.example/pixel.png)\n\n"
    '<iframe src="http://offsite.example/frame"></iframe>\n'
    "#sim echo=1 tps=200 ttft=0.05"
)


def test_markup_in_prompts_and_model_output_stays_inert_everywhere(
    browser: Browser, app: App, simulator: Simulator
) -> None:
    """The model repeats the prompt (the simulator's echo): the same markup arrives as the
    user's message and as model output, live, after a reload, in history and in the export."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_init_script(WATCH_CSP)
    offsite: list[str] = []
    context.route(
        re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"),
        lambda route: (offsite.append(route.request.url), route.abort()),
    )
    page = context.new_page()
    seen = Recorder(page)
    try:
        page.goto(app.url + "/")
        page.get_by_role("button", name="Start a new chat").click()
        page.wait_for_selector('[data-connected="true"]')
        conversations = page.locator("nav a[href^='/c/']").count()
        box = page.get_by_role("textbox", name="Message")
        box.fill(HOSTILE)
        box.press("Enter")
        page.wait_for_selector('article[data-role="assistant"][data-status="complete"]')
        echoed = simulator.request_for("[t-hostile]")["text"]
        assert "<script>" in echoed and "onerror" in echoed  # the model really sent it

        for moment in ("live", "reloaded"):
            log = page.get_by_role("log")
            assert page.evaluate("window.__pwned") is None, moment
            assert log.locator("script, img, iframe, [onerror], [hx-get]").count() == 0, moment
            assert log.locator("a[href^='javascript:']").count() == 0, moment
            answer = page.locator('article[data-role="assistant"]').last
            for text in ("<script>", "onerror", "hx-get", "offsite.example"):
                assert text in answer.inner_text(), (moment, text)  # shown, as text
            page.reload()
            page.wait_for_selector('[data-connected="true"]')
        assert page.locator("nav a[href^='/c/']").count() == conversations  # hx-get never ran
        export = page.request.get(page.url + "export.json").json()
        assert [m["content"] for m in export["messages"]] == [HOSTILE, echoed]  # verbatim
    finally:
        context.close()
    assert offsite == []  # no request left for another host
    assert seen.problems == []
