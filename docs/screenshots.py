"""``python -m docs.screenshots`` (``make screenshots``): the README's screenshots, taken from the
real app in Debian's chromium, in English and in Simplified Chinese.

Starts the simulator (its speed set by environment, so no ``#sim`` line shows in a prompt) and
the app on loopback ports, then for each language: the chat with one finished answer and one
streaming, a thinking model's answer, an answer with formulas, an image question, the comparison
page after "Run 5 times", that run's share link opened without an account, a replay of it
mid-way, two setups side by side, and a run through a 5 s gateway timeout. Selectors are ids and
attributes, never words, so both languages take the same path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import FilePayload, Page, sync_playwright

from tests.support.app import start_app
from tests.support.processes import ROOT, free_port, stop_process, wait_for_port
from tests.support.simulator import Simulator

OUT = ROOT / "docs"
LANGUAGES = {
    "en": {
        "locale": "en-US",
        "first": "What makes a river change its course?",
        "second": "How do streaming answers work in a chat app?",
        "thinking": "Why is the sky blue at noon but red at sunset?",
        "compare": "Explain what a vector database is, for a product manager.",
        "math": "What is the quadratic formula, and where does it come from?",
        "image": "What is in this picture?",
    },
    "zh": {
        "locale": "zh-CN",
        "first": "河流为什么会改道？",
        "second": "聊天应用里的流式输出是怎么实现的？",
        "thinking": "为什么天空中午是蓝色的，日落时却是红色的？",
        "compare": "请向产品经理解释什么是向量数据库。",
        "math": "一元二次方程的求根公式是什么？",
        "image": "这张图片里有什么？",
    },
}


def start_simulator() -> tuple[Simulator, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "SIM_TTFT": "0.6", "SIM_TPS": "30", "SIM_TOKENS": "220", "SIM_SEED": "4"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process)
    return Simulator(port), process


def new_chat(page: Page, base: str) -> None:
    page.goto(base + "/")
    page.locator("form[action='/c/new/'] button[type=submit]").first.click()
    page.wait_for_selector('[data-connected="true"]')


def ask(page: Page, text: str) -> None:
    box = page.locator("#message")
    box.fill(text)
    box.press("Enter")
    page.wait_for_selector('article[data-role="assistant"][data-status="streaming"]')


def chat(page: Page, base: str, words: dict[str, str], name: str) -> None:
    new_chat(page, base)
    ask(page, words["first"])
    page.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=60000)
    ask(page, words["second"])
    time.sleep(3.0)  # mid-answer: the second one still streaming
    page.screenshot(path=OUT / f"chat.{name}.png")


def thinking(page: Page, base: str, words: dict[str, str], name: str) -> None:
    new_chat(page, base)
    with page.expect_response(lambda r: r.url.endswith("/settings/")):
        page.locator("select[name=model]").select_option("qwq-plus")
    ask(page, words["thinking"])
    page.wait_for_selector("[data-thought-ms]", timeout=60000)
    time.sleep(2.0)
    page.locator("article[data-status=streaming] details.thinking > summary").click()
    time.sleep(0.3)
    page.screenshot(path=OUT / f"thinking.{name}.png")


def math(page: Page, base: str, words: dict[str, str], name: str) -> None:
    """An answer with formulas (the prompt asks about one, so the simulator writes TeX), drawn
    as MathML."""
    new_chat(page, base)
    ask(page, words["math"])
    page.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=60000)
    page.locator("article .math-display").first.scroll_into_view_if_needed()
    time.sleep(0.3)
    page.screenshot(path=OUT / f"math.{name}.png")


def _landscape() -> bytes:
    """A small drawn picture (sky, sun, hills) to ask a vision model about."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 320), "#8ec5f0")
    draw = ImageDraw.Draw(image)
    draw.ellipse((340, 40, 420, 120), fill="#ffd34d")
    draw.polygon([(0, 320), (0, 210), (140, 150), (300, 230), (480, 170), (480, 320)], "#4f9a4a")
    draw.polygon([(0, 320), (0, 260), (200, 220), (480, 280), (480, 320)], "#3c7a38")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image(page: Page, base: str, words: dict[str, str], name: str) -> None:
    """An image question: a picture attached to a vision model's chat, its thumbnail in the
    question, the answer saying what it received."""
    new_chat(page, base)
    with page.expect_response(lambda r: r.url.endswith("/settings/")):
        page.locator("select[name=model]").select_option("qwen-vl-plus")
    page.set_input_files(
        "#image-file",
        files=[FilePayload(name="landscape.png", mimeType="image/png", buffer=_landscape())],
    )
    page.wait_for_selector(".image-chip")
    ask(page, words["image"])
    page.wait_for_selector('article[data-role="assistant"][data-status="complete"]', timeout=60000)
    page.evaluate("document.querySelector('article[data-role=user]').scrollIntoView()")
    time.sleep(0.3)
    page.screenshot(path=OUT / f"image.{name}.png")


def compare(page: Page, base: str, words: dict[str, str], name: str) -> None:
    page.goto(base + "/compare/")
    page.wait_for_selector('[data-connected="true"]')
    page.locator("#prompt").fill(words["compare"])
    page.locator("button[data-trials='5']").click()
    page.wait_for_selector("figure.chart svg", timeout=180000)
    time.sleep(0.5)
    page.screenshot(path=OUT / f"compare.{name}.png", full_page=True)


def share(page: Page, base: str, words: dict[str, str], name: str) -> None:
    """The run just made (``compare``), shared: its link opened by someone without an account,
    then replayed there mid-way."""
    page.locator("[data-share] button").first.click()
    page.locator("[data-share-panel] form button[type=submit]").first.click()
    link = page.locator("[data-share-link][data-new]").get_attribute("data-share-link")
    assert link, "no share link was made"
    browser = page.context.browser
    assert browser is not None
    stranger = browser.new_context(
        viewport={"width": 1280, "height": 820}, locale=LANGUAGES[name]["locale"]
    )
    shared = stranger.new_page()
    shared.goto(link)
    shared.wait_for_selector("[data-verdict]")
    shared.screenshot(path=OUT / f"share.{name}.png", full_page=True)
    shared.locator("[data-replay-button]").click()
    shared.wait_for_selector("[data-replay]")
    time.sleep(2.5)  # mid-replay: the streamed pane growing, the other still waiting
    shared.evaluate("window.scrollTo(0, 0)")  # the button is at the foot; the panes at the top
    shared.screenshot(path=OUT / f"replay.{name}.png")
    stranger.close()


def setups(page: Page, base: str, words: dict[str, str], name: str) -> None:
    """Two setups side by side: the first two models the picker offers, both streamed."""
    page.goto(base + "/compare/")
    page.wait_for_selector('[data-connected="true"]')
    page.locator("select[name=pairing]").select_option("setups")
    options = page.locator("select[name=model_a] option")
    page.locator("select[name=model_b]").select_option(options.nth(1).get_attribute("value"))
    page.locator("#prompt").fill(words["compare"])
    page.locator("#compare-form button[data-trials='1']").click()
    page.wait_for_selector("[data-verdict]", timeout=120000)
    time.sleep(0.5)
    page.screenshot(path=OUT / f"setups.{name}.png", full_page=True)


def timeout(page: Page, base: str, words: dict[str, str], name: str) -> None:
    """The "Long essay" preset through a 5 s gateway: the unstreamed side is cut."""
    page.goto(base + "/compare/")
    page.wait_for_selector('[data-connected="true"]')
    page.locator("button.preset").nth(2 if name == "en" else 3).click()
    page.locator("select[name=gateway_timeout]").select_option("5")
    page.locator("#compare-form button[data-trials='1']").click()
    page.wait_for_selector("[data-verdict]", timeout=120000)
    time.sleep(0.5)
    page.screenshot(path=OUT / f"timeout.{name}.png", full_page=True)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("make screenshots needs Debian's chromium (apt-get install chromium)")
        return 1
    cjk = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    if not cjk.strip():  # the Chinese shots would show boxes for every character
        print("make screenshots needs a Chinese font (apt-get install fonts-noto-cjk)")
        return 1
    sim, sim_process = start_simulator()
    tmp = Path(tempfile.mkdtemp(prefix="screenshots-"))
    app, app_process = start_app(
        tmp,
        {
            "LLM_API_BASE": sim.base_url,
            "LLM_PROVIDER_NAME": "Offline simulator",
            # The default models, and one that sees (the image question).
            "LLM_MODELS": "qwen-plus,qwen-turbo,qwen-max,qwq-plus,qwen-vl-plus",
        },
    )
    base = app.url
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            for name, words in LANGUAGES.items():
                context = browser.new_context(
                    viewport={"width": 1280, "height": 820},
                    locale=words["locale"],
                    device_scale_factor=1,
                )
                page = context.new_page()
                for shot in (chat, thinking, math, image, compare, share, setups, timeout):
                    shot(page, base, words, name)
                    print(f"docs/{shot.__name__}.{name}.png")
                context.close()
            browser.close()
    finally:
        stop_process(app_process)
        stop_process(sim_process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
