"""Keyboard, flow, accessibility and phones, in a real browser (issue 7).

Esc stops an answer, Alt+N starts a new chat, Tab reaches every control with a visible focus
ring, the view follows the stream until the reader scrolls up ("Jump to latest" brings them
back), a finished answer is announced once (not token by token), text keeps WCAG AA contrast
in both colour schemes, and the page works at 375 px wide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.app import App
from tests.support.browser import open_new_chat, watch_problems
from tests.support.waiting import throughout_sync, until_sync

pytestmark = [pytest.mark.browser, pytest.mark.live]

PHONE = {"width": 375, "height": 740}

STREAMING = 'article[data-role="assistant"][data-status="streaming"]'

# What the page has focused, and whether the focus ring shows.
FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(), id: el.id, name: el.getAttribute("name") || "",
    cls: el.className || "", text: (el.innerText || el.value || "").trim().slice(0, 40),
    href: el.getAttribute("href") || "",
    ring: el.matches(":focus-visible") && style.outlineStyle !== "none"
      && parseFloat(style.outlineWidth) >= 2,
  };
}"""

# Every piece of visible text on the page (and placeholders, and CSS-generated labels) against
# the background it is drawn on, composited up the ancestors: WCAG 2 contrast ratios.
CONTRAST = """() => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3]))
    .concat([1]);
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let color = dark ? [0, 0, 0, 1] : [255, 255, 255, 1];
    for (const layer of layers.reverse()) color = over(layer, color);
    return color;
  };
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (typeof el.className === "string" && el.className
       ? "." + el.className.split(" ").join(".") : "");
  const shown = (el) => {
    if (!el.getClientRects().length) return false;
    if (el.closest(".visually-hidden, [hidden], template")) return false;
    const style = getComputedStyle(el);
    return style.visibility === "visible" && style.display !== "none" && !el.matches(":disabled");
  };
  const results = [];
  const check = (el, fg, what) => {
    const bg = background(el);
    const text = parse(fg);
    if (!text) return;
    const shown = over(text, bg);
    results.push({ what, el: describe(el), ratio: ratio(shown, bg), fg, bg: bg.join(",") });
  };
  for (const el of document.body.querySelectorAll("*")) {
    if (!shown(el)) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (own) check(el, getComputedStyle(el).color, "text");
    if (el.matches("textarea, input") && el.placeholder) {
      check(el, getComputedStyle(el, "::placeholder").color, "placeholder");
    }
    for (const pseudo of ["::before", "::after"]) {
      const style = getComputedStyle(el, pseudo);
      if (!["none", "normal", '""'].includes(style.content)) check(el, style.color, pseudo);
    }
  }
  return results;
}"""


def contrast(p: Page) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Pairs below 4.5:1, and the main and secondary text's ratios."""
    results = p.evaluate(CONTRAST)
    failing = [r for r in results if r["ratio"] < 4.5]
    main = p.evaluate(
        """() => {
          const rgb = (c) => c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
          const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92
            : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(c[0]) + 0.7152 * f(c[1])
            + 0.0722 * f(c[2]); };
          const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((m, n) => n - m);
            return (x + 0.05) / (y + 0.05); };
          const root = getComputedStyle(document.documentElement);
          const probe = (name) => { const s = document.createElement("span");
            s.style.setProperty("color", `var(${name})`); document.body.append(s);
            const c = rgb(getComputedStyle(s).color); s.remove(); return c; };
          const bg = rgb(getComputedStyle(document.body).backgroundColor);
          return { text: ratio(rgb(getComputedStyle(document.body).color), bg),
                   muted: ratio(probe("--muted"), bg), panel_muted: ratio(probe("--muted"),
                   probe("--panel")), link: ratio(probe("--link"), bg) };
        }"""
    )
    return failing, main


def send(p: Page, text: str) -> None:
    box = p.get_by_role("textbox", name="Message", exact=True)
    box.fill(text)
    box.press("Enter")


def wait_done(p: Page, count: int, timeout: float = 30000) -> None:
    """Until ``count`` answers have ended (whatever their outcome)."""
    p.wait_for_function(
        "(n) => document.querySelectorAll("
        '\'article[data-role="assistant"]:not([data-status="streaming"])\').length >= n',
        arg=count,
        timeout=timeout,
    )


def test_escape_stops_the_answer_unless_the_focus_keeps_esc_for_itself(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    send(p, "Long answer please [t-kb-esc]\n#sim tokens=400 tps=30 ttft=0.05")
    answer = p.locator(STREAMING)
    answer.locator(".message__tail").filter(has_text="  ").or_(
        answer.locator(".message__tail").filter(has_text=" ")
    ).first.wait_for()
    # A control whose own handler takes Esc (as the edit box's does, on the document, from a
    # script loaded after app.js) keeps it.
    p.evaluate(
        """() => { const box = document.createElement("input");
                   box.id = "took-esc";
                   document.querySelector(".chat__header").append(box);
                   document.addEventListener("keydown", (event) => {
                     if (event.target === box && event.key === "Escape") event.preventDefault();
                   }); }"""
    )
    p.locator("#took-esc").press("Escape")
    throughout_sync(lambda: p.locator(STREAMING).count() == 1, "Esc stopped it", during=0.3)
    # So does any control marked as keeping Esc for itself.
    p.evaluate(
        """() => { const box = document.createElement("input");
                   box.id = "own-esc"; box.setAttribute("data-own-escape", "");
                   document.querySelector(".chat__header").append(box); }"""
    )
    p.locator("#own-esc").focus()
    p.keyboard.press("Escape")
    throughout_sync(lambda: p.locator(STREAMING).count() == 1, "Esc stopped it", during=0.5)
    # From anywhere else on the page (here: nothing focused), Esc is Stop.
    p.evaluate(
        "() => { for (const id of ['own-esc', 'took-esc']) document.getElementById(id).remove(); }"
    )
    p.locator(".sidebar__brand").click()
    assert p.evaluate("() => document.activeElement === document.body")
    p.keyboard.press("Escape")
    p.wait_for_selector('article[data-role="assistant"][data-status="stopped"]')
    p.get_by_role("button", name="Send", exact=True).wait_for()
    assert p.locator("#announcer").inner_text() == "Answer stopped."
    assert problems == []


def test_alt_n_starts_a_new_chat(page: Page, app: App, problems: list[str]) -> None:
    p = page
    open_new_chat(p, app)
    send(p, "A first chat [t-kb-new]\n#sim tokens=10 tps=200 ttft=0.05")
    wait_done(p, 1)
    before = p.url
    new_chat = p.get_by_role("button", name="New chat")
    assert new_chat.get_attribute("aria-keyshortcuts") == "Alt+N"
    assert "Alt+N" in str(new_chat.get_attribute("title"))
    p.get_by_role("textbox", name="Message", exact=True).focus()  # even while typing
    p.keyboard.press("Alt+KeyN")
    p.wait_for_url(lambda url: url != before and "/c/" in url)
    p.wait_for_selector('[data-connected="true"]')
    assert p.locator("article").count() == 0
    assert p.evaluate("() => document.activeElement.id") == "message"
    assert p.get_by_role("navigation", name="Conversations").get_by_role("link").count() == 2
    assert problems == []


def test_tab_reaches_every_control_in_order_with_a_visible_focus_ring(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    send(p, "Tab through me [t-kb-tab]\n#sim tokens=30 tps=200 ttft=0.05")
    wait_done(p, 1)
    p.reload()
    p.wait_for_selector('[data-connected="true"]')
    assert p.evaluate("() => document.activeElement.id") == "message"  # autofocus
    # Back to the top with the keyboard alone: the skip link is the first stop.
    for _ in range(100):
        p.keyboard.press("Shift+Tab")
        if "skip-link" in p.evaluate(FOCUSED)["cls"]:
            break
    else:
        raise AssertionError("Shift+Tab never reached the skip link")
    stops = [p.evaluate(FOCUSED)]
    for _ in range(100):
        p.keyboard.press("Tab")
        stops.append(p.evaluate(FOCUSED))
        if "btn--send" in stops[-1]["cls"]:
            break
    else:
        raise AssertionError(f"Tab never reached Send: {stops}")
    assert [s for s in stops if not s["ring"]] == [], "focus without a visible ring"

    def first(predicate: Any) -> int:
        found = [i for i, s in enumerate(stops) if predicate(s)]
        assert found, f"not reached: {stops}"
        return found[0]

    order = [
        first(lambda s: "skip-link" in s["cls"]),
        first(lambda s: s["text"] == "New chat"),
        first(lambda s: s["id"].startswith("conversation-") and s["id"].endswith("-link")),
        first(lambda s: s["tag"] == "select" and s["name"] == "model"),
        first(lambda s: s["id"] == "message"),
        first(lambda s: "btn--send" in s["cls"]),
    ]
    assert order == sorted(order) and order[0] == 0, stops
    # The skip link goes straight to the message box.
    for _ in range(len(stops) - 1):
        p.keyboard.press("Shift+Tab")
    assert "skip-link" in p.evaluate(FOCUSED)["cls"]
    assert p.locator("a.skip-link").is_visible()
    assert p.locator("a.skip-link").inner_text() == "Skip to message box"
    p.keyboard.press("Enter")
    assert p.evaluate(FOCUSED)["id"] == "message"
    assert problems == []


def test_the_view_follows_the_stream_until_the_reader_scrolls_up(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    p.set_viewport_size({"width": 1000, "height": 500})
    open_new_chat(p, app)
    jump = p.get_by_role("button", name="Jump to latest")
    away = "() => { const r = document.scrollingElement;" \
        " return r.scrollHeight - r.scrollTop - r.clientHeight; }"  # fmt: skip
    send(p, "A long one [t-kb-scroll]\n#sim tokens=900 tps=60 ttft=0.05")
    p.wait_for_function(
        "() => document.scrollingElement.scrollHeight > document.scrollingElement.clientHeight"
        " + 400"
    )
    assert p.locator(STREAMING).count() == 1
    assert p.evaluate(away) < 80  # it follows
    assert jump.is_hidden()
    # The reader scrolls up: the view stays there and "Jump to latest" appears.
    p.mouse.move(500, 200)
    p.mouse.wheel(0, -300)
    jump.wait_for(state="visible")
    throughout_sync(lambda: p.evaluate(away) > 200, "new text pulled the view back", during=0.5)
    assert p.locator(STREAMING).count() == 1
    jump.click()
    assert p.evaluate(away) < 80
    assert jump.is_hidden()
    throughout_sync(  # and it follows again
        lambda: p.evaluate(away) < 80, "the view stopped following", during=0.5
    )
    # From the keyboard too, and the focus lands in the message box, not on nothing.
    p.mouse.wheel(0, -300)
    jump.wait_for(state="visible")
    jump.focus()
    p.keyboard.press("Enter")
    assert p.evaluate(away) < 80
    assert p.evaluate("() => document.activeElement.id") == "message"
    # A trackpad moves in small steps: new text does not pull the reader back between them.
    for _ in range(12):
        p.mouse.wheel(0, -25)
        time.sleep(0.03)
    jump.wait_for(state="visible")
    assert p.evaluate(away) > 150
    assert p.locator(STREAMING).count() == 1
    p.keyboard.press("Escape")
    wait_done(p, 1)
    assert problems == []


def test_each_finished_answer_is_announced_once_and_never_token_by_token(
    page: Page, app: App, problems: list[str]
) -> None:
    p = page
    open_new_chat(p, app)
    log = p.get_by_role("log")
    assert log.get_attribute("aria-live") == "off"
    assert log.get_attribute("aria-label") == "Messages"
    announcer = p.get_by_role("status").and_(p.locator("#announcer"))
    assert announcer.get_attribute("aria-live") == "polite"
    p.evaluate(
        """() => {
          window.__announced = [];
          window.__changes = 0;
          new MutationObserver(() => {
            window.__changes += 1;
            const text = document.getElementById("announcer").textContent.trim();
            if (text) window.__announced.push(text);
          }).observe(document.getElementById("announcer"),
                     { childList: true, subtree: true, characterData: true });
        }"""
    )
    send(p, "One [t-kb-say-1]\n#sim tokens=60 tps=100 ttft=0.05")
    wait_done(p, 1)
    send(p, "Two [t-kb-say-2]\n#sim tokens=60 tps=100 ttft=0.05")
    wait_done(p, 2)
    send(p, "Three [t-kb-say-3]\n#sim tokens=300 tps=30 ttft=0.05")
    p.locator(STREAMING).locator(".message__tail").filter(has_text=" ").wait_for()
    p.keyboard.press("Escape")
    wait_done(p, 3)
    send(p, "Four [t-kb-say-4]\n#sim fault=401")
    wait_done(p, 4)
    error = p.locator('article[data-role="assistant"]').last.locator(".message__error")
    assert error.inner_text().strip()

    def announced_so_far() -> list[str]:
        return list(p.evaluate("() => window.__announced"))

    until_sync(lambda: len(announced_so_far()) >= 4, "the error announced", within=5)
    throughout_sync(lambda: len(announced_so_far()) == 4, "announced again", during=0.3)
    announced = announced_so_far()
    assert announced == [
        "Answer complete.",
        "Answer complete.",
        "Answer stopped.",
        error.inner_text().strip(),
    ]
    # Each turn empties it, each ending fills it: nothing else touched it while tokens flowed.
    assert p.evaluate("() => window.__changes") <= 2 * len(announced)
    assert problems == []


@pytest.fixture
def phone(browser: Browser, problems: list[str]) -> Iterator[Page]:
    """A page 375 px wide, as on a phone."""
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    p = context.new_page()
    watch_problems(p, problems)
    try:
        yield p
    finally:
        context.close()


WIDE = (
    "Wide things [t-kb-phone] "
    + "unbroken" * 30
    + "\n\n| a | b | c | d | e | f |\n|---|---|---|---|---|---|\n"
    + "| alpha-beta-gamma | delta-epsilon | zeta-eta-theta | iota-kappa | lambda-mu | nu-xi |\n\n"
    + "```python\nprint('"
    + "x" * 200
    + "')\n```\n#sim echo=1 tps=400 ttft=0.05"
)


def sideways(p: Page) -> int:
    return int(p.evaluate("() => document.scrollingElement.scrollWidth"))


def test_a_phone_folds_the_sidebar_and_chats_without_sideways_scrolling(
    phone: Page, app: App, problems: list[str]
) -> None:
    p = phone
    open_new_chat(p, app)
    assert sideways(p) <= PHONE["width"]
    toggle = p.get_by_role("button", name="Conversations")
    nav = p.get_by_role("navigation", name="Conversations")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert nav.is_hidden()
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    nav.get_by_role("link").first.wait_for()
    assert sideways(p) <= PHONE["width"]  # long titles are cut, not pushing the page wider
    toggle.click()
    assert nav.is_hidden()
    box = p.get_by_role("textbox", name="Message", exact=True)
    assert box.is_visible()
    send(p, WIDE)
    wait_done(p, 1)
    answer = p.locator('article[data-role="assistant"]').last
    assert answer.get_attribute("data-status") == "complete"
    assert "unbroken" in answer.inner_text()
    assert sideways(p) <= PHONE["width"]
    send_button = p.get_by_role("button", name="Send", exact=True)
    for element in (box, send_button, answer):
        area = element.bounding_box()
        assert area is not None and area["x"] >= 0 and area["x"] + area["width"] <= PHONE["width"]
    assert problems == []


def run_comparison(p: Page, app: App, tag: str) -> None:
    p.goto(app.url + "/compare/")
    p.wait_for_selector('[data-connected="true"]')
    p.get_by_role("textbox", name="Prompt").fill(f"Compare {tag}\n#sim tokens=20 tps=200 ttft=0.05")
    p.get_by_role("button", name="Run", exact=True).click()
    p.locator("[data-verdict]").wait_for(timeout=30000)


def test_a_comparison_is_announced_by_its_verdict_not_token_by_token(
    page: Page, app: App, problems: list[str]
) -> None:
    """Two panes streaming at once would be read out word by word, interleaved; they are not
    live, and a status region reads the verdict once it is known."""
    p = page
    p.goto(app.url + "/compare/")
    p.wait_for_selector('[data-connected="true"]')
    announcer = p.get_by_role("status").and_(p.locator("#compare-announcer"))
    assert announcer.get_attribute("aria-live") == "polite" and announcer.inner_text() == ""
    run_comparison(p, app, "[t-kb-cmp-say]")
    logs = p.get_by_role("log")
    assert logs.count() == 2
    assert all(logs.nth(i).get_attribute("aria-live") == "off" for i in range(2))
    verdict = p.locator("[data-verdict]").inner_text()
    assert "reading began after" in verdict
    assert announcer.inner_text() == verdict
    assert problems == []


def test_a_phone_stacks_the_comparison_panes(phone: Page, app: App, problems: list[str]) -> None:
    p = phone
    run_comparison(p, app, "[t-kb-phone-cmp]")
    on = p.locator('section[data-mode="stream"]').bounding_box()
    off = p.locator('section[data-mode="nostream"]').bounding_box()
    assert on is not None and off is not None
    assert off["y"] >= on["y"] + on["height"]  # one above the other
    assert sideways(p) <= PHONE["width"]
    assert problems == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_keeps_aa_contrast_in_both_colour_schemes(
    page: Page, app: App, problems: list[str], scheme: str
) -> None:
    p = page
    p.emulate_media(color_scheme=scheme)
    open_new_chat(p, app)
    send(p, "Contrast, please [t-kb-contrast]\n#sim tokens=120 tps=300 ttft=0.05")
    wait_done(p, 1)
    send(p, f"An error too [t-kb-contrast-{scheme}]\n#sim fault=401")
    wait_done(p, 2)
    p.locator(".settings__options > summary").click()  # the options' placeholders and hint
    failing, main = contrast(p)
    assert failing == [], f"chat page, {scheme}: {failing}"
    assert min(main.values()) >= 4.5, main
    run_comparison(p, app, f"[t-kb-contrast-cmp-{scheme}]")
    failing, main = contrast(p)
    assert failing == [], f"comparison page, {scheme}: {failing}"
    assert min(main.values()) >= 4.5, main
    assert problems == []
