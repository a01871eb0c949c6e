"""Figures that never go missing: while an answer streams, its stats line shows a live token
count and rate; after it, the usage the upstream reported, or our estimate marked as one.

One app, three upstreams on one simulator: the default provider speaks OpenAI-compatible and
asks for usage (``stream_options.include_usage``); "No usage" is the same server asked for none
(as llama.cpp and many self-hosted servers send none while streaming); "Native" speaks
DashScope's native SSE, whose every event carries the cumulative usage.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chat.accounts.usage import estimate_prompt_tokens, estimate_tokens
from tests.support.app import App, manage, running_app, set_provider
from tests.support.frames import Frame
from tests.support.simulator import Simulator, running_simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

pytestmark = pytest.mark.live

# About 2 s of answer: several stats updates (at most four a second) while it streams.
SLOW = "tokens=70 tps=35 ttft=0.05"
LIVE = re.compile(r'<p\s+id="answer-(\d+)-live"[^>]*>', re.S)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Simulator]:
    with running_simulator() as instance:
        yield instance


@pytest.fixture(scope="module")
def figures_app(upstream: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("figures")
    env = {"LLM_API_BASE": upstream.base_url, "LLM_MODELS": "qwen-plus"}
    full = {**os.environ, **env}
    db = tmp / "db.sqlite3"
    manage(full, db, "migrate", "--noinput")
    set_provider(full, db, "No usage", "--base-url", upstream.base_url, "--models", "qwen-plus",
                 "--no-usage")  # fmt: skip
    set_provider(full, db, "Native", "--protocol", "dashscope", "--base-url",
                 f"{upstream.base}/api/v1", "--models", "qwen-plus")  # fmt: skip
    with running_app(tmp, env) as instance:
        yield instance


@pytest.fixture
def guest(figures_app: App) -> Iterator[Visitor]:
    v = Visitor(figures_app)
    try:
        yield v
    finally:
        v.close()


def choice(visitor: Visitor, provider: str) -> str:
    """The model picker's value of qwen-plus under ``provider``."""
    page = visitor.http.get(f"/c/{visitor.new_conversation()}/").text
    groups = dict(re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', page, re.S))
    match = re.search(r'value="(p\d+:qwen-plus)"', groups[provider])
    assert match, groups
    return match.group(1)


def live_counts(frames: list[Frame], answer_id: int) -> list[tuple[int, bool, str]]:
    """The live stats lines the socket received for the answer: (tokens, estimated, words)."""
    found = []
    for frame in frames:
        for match in LIVE.finditer(frame.html):
            if int(match.group(1)) != answer_id or "data-live-tokens" not in match.group(0):
                continue
            count = re.search(r'data-live-tokens="(\d+)"', match.group(0))
            assert count is not None
            tokens = int(count.group(1))
            end = frame.html.index("</p>", match.end())
            inner = re.sub(r"<[^>]+>", " ", frame.html[match.end() : end])
            words = " ".join(html.unescape(inner).split())
            found.append((tokens, "data-tokens-estimated" in match.group(0), words))
    return found


def question(marker: str) -> str:
    return f"Describe the tides {marker}\n#sim {SLOW}"


async def ask(visitor: Visitor, model: str | None, marker: str) -> tuple[int, list[Frame], Any]:
    """Ask, read every frame until the answer is final; then its export row and its article
    as the page draws it."""
    conversation = visitor.new_conversation(**({"model": model} if model else {}))
    async with visitor.socket(conversation) as ws:
        await send(ws, question(marker))
        answer_id, frames, _ = await collect_answer(ws)
    page = visitor.http.get(f"/c/{conversation}/").text
    article = page[page.index(f'id="message-{answer_id}"') :]
    article = article[: article.index("</article>")]
    return answer_id, frames, (answer_row(visitor.export(conversation), answer_id), article)


def assert_rising(counts: list[tuple[int, bool, str]]) -> None:
    tokens = [count for count, _, _ in counts]
    assert len(tokens) >= 3, counts  # updated while it streamed, not once
    assert tokens == sorted(tokens) and tokens[-1] > tokens[0], tokens


async def test_without_usage_the_count_is_ours_live_and_after(
    guest: Visitor, upstream: Simulator
) -> None:
    answer_id, frames, (row, article) = await ask(guest, choice(guest, "No usage"), "[nousage]")

    counts = live_counts(frames, answer_id)
    assert_rising(counts)
    assert all(estimated for _, estimated, _ in counts)
    tokens, _, words = counts[-1]
    assert re.fullmatch(rf"{tokens} tokens · [\d.]+ tokens/s \(estimated\)", words), words
    assert not upstream.request_for("[nousage]")["include_usage"]

    # Finished: the estimate, marked as one, where "Token usage not reported" used to be.
    completion = estimate_tokens(row["content"])
    prompt = estimate_prompt_tokens([{"role": "user", "content": question("[nousage]")}])
    assert row["tokens_estimated"] is True
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert tokens <= completion
    assert "not reported" not in article
    assert f"{completion} completion" in article and "(estimated)" in article
    assert re.search(r"<strong>[\d.]+</strong> tokens/s", article)


async def test_reported_usage_replaces_the_estimate(guest: Visitor, upstream: Simulator) -> None:
    answer_id, frames, (row, article) = await ask(guest, None, "[usage]")

    counts = live_counts(frames, answer_id)
    assert_rising(counts)
    assert all(estimated for _, estimated, _ in counts)  # the usage comes in the last chunk
    logged = upstream.request_for("[usage]")
    assert logged["include_usage"]
    assert row["tokens_estimated"] is False
    assert row["completion_tokens"] == logged["tokens_sent"]
    assert "(estimated)" not in article
    assert f"{row['completion_tokens']} completion" in article


async def test_native_counts_are_the_upstreams_live(guest: Visitor, upstream: Simulator) -> None:
    answer_id, frames, (row, article) = await ask(guest, choice(guest, "Native"), "[native]")

    counts = live_counts(frames, answer_id)
    assert_rising(counts)
    assert not any(estimated for _, estimated, _ in counts)  # output_tokens of each event
    tokens, _, words = counts[-1]
    assert re.fullmatch(rf"{tokens} tokens · [\d.]+ tokens/s", words), words
    logged = upstream.request_for("[native]")
    assert logged["protocol"] == "dashscope"
    assert row["completion_tokens"] == logged["tokens_sent"]
    assert tokens <= row["completion_tokens"]
    assert row["tokens_estimated"] is False
    assert "(estimated)" not in article


async def test_a_socket_that_joins_mid_answer_sees_the_figures_so_far(guest: Visitor) -> None:
    """The snapshot a late socket gets draws the answer's stats line as the deltas do."""
    conversation = guest.new_conversation(model=choice(guest, "No usage"))
    async with guest.socket(conversation) as first:
        await send(first, question("[joins]"))
        answer_id, _frames = await read_until_counted(first)
        async with guest.socket(conversation) as late:
            joined = Frame(str(await asyncio.wait_for(late.recv(), 10)), time.monotonic())
            counts = live_counts([joined], answer_id)
            assert len(counts) == 1, joined.html
            tokens, estimated, words = counts[0]
            assert tokens > 0 and estimated
            assert re.fullmatch(rf"{tokens} tokens? · [\d.]+ tokens/s \(estimated\)", words), words
        await collect_answer(first, answer_id)


async def read_until_counted(ws: Any, timeout: float = 10.0) -> tuple[int, list[Frame]]:
    """Frames until one carries a live count of the new answer: its id, and the frames."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames.append(Frame(str(await asyncio.wait_for(ws.recv(), timeout)), time.monotonic()))
        for article in frames[0].articles:
            if article.get("data-status") == "streaming" and article.get("data-role") != "user":
                answer_id = int(article["id"].removeprefix("message-"))
                if live_counts(frames, answer_id):
                    return answer_id, frames
    raise TimeoutError("no live count arrived")
