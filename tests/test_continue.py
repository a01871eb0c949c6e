"""Continue: an answer cut at the length limit goes on, over the real socket, against the
simulator, and stays one answer (one message, the texts joined, the figures added up).

The simulator's defaults here are fast, with a short wait before the first token: the
continuation's request ends with our "continue" message, which carries no ``#sim`` line.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chat.generation.continuation import CONTINUE_PROMPT
from chat.generation.state import continuation_seq
from chat.live.follower import DONE, Follower
from chat.live.protocol import FrameEvent, FrameKind
from tests.support.app import App, running_app
from tests.support.frames import streamed_text
from tests.support.simulator import Simulator, running_simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

pytestmark = pytest.mark.live

CUT = "tokens=40 tps=200 ttft=0.05"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Simulator]:
    with running_simulator(env={"SIM_TTFT": "0.3", "SIM_TPS": "400"}) as instance:
        yield instance


@pytest.fixture(scope="module")
def continue_app(upstream: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    env = {"LLM_API_BASE": upstream.base_url, "LLM_MODELS": "qwen-plus"}
    with running_app(tmp_path_factory.mktemp("continue"), env) as instance:
        yield instance


@pytest.fixture
def guest(continue_app: App) -> Iterator[Visitor]:
    v = Visitor(continue_app)
    try:
        yield v
    finally:
        v.close()


def set_max_tokens(visitor: Visitor, conversation: int, value: str) -> None:
    data = {"model": "qwen-plus", "system_prompt": "", "stream": "on", "max_tokens": value}
    visitor.post(f"/c/{conversation}/settings/", data).raise_for_status()


async def cut_answer(visitor: Visitor, marker: str) -> tuple[int, int, str]:
    """A conversation whose answer was cut at 12 tokens: (conversation, answer, question)."""
    conversation = visitor.new_conversation(max_tokens="12")
    question = f"Explain tides {marker}\n#sim {CUT}"
    async with visitor.socket(conversation) as ws:
        await send(ws, question)
        answer_id, _, final = await collect_answer(ws)
    assert final["data-status"] == "complete"
    assert answer_row(visitor.export(conversation), answer_id)["finish_reason"] == "length"
    return conversation, answer_id, question


async def press_continue(ws: Any, answer_id: int) -> None:
    """What the Continue button sends (htmx's ws-send with its hx-vals)."""
    await ws.send(json.dumps({"action": "continue", "answer": str(answer_id), "HEADERS": {}}))


async def alert(ws: Any, timeout: float = 10.0) -> str:
    """The next alert the socket shows, as text."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        raw = str(await asyncio.wait_for(ws.recv(), remaining))
        if 'role="alert"' in raw:
            return " ".join(re.sub(r"<[^>]+>", " ", raw).split())
    raise TimeoutError("no alert came")


def article_of(page: str, answer_id: int) -> str:
    start = page.index(f'id="message-{answer_id}"')
    return page[start : page.index("</article>", start)]


async def test_continue_appends_to_the_same_answer(guest: Visitor, upstream: Simulator) -> None:
    conversation, answer_id, question = await cut_answer(guest, "[go-on]")
    before = answer_row(guest.export(conversation), answer_id)
    cut = upstream.request_for("[go-on]")
    assert before["content"] == cut["text"] and cut["tokens_sent"] == 12
    page = guest.http.get(f"/c/{conversation}/").text
    assert re.search(rf'<button[^>]*id="continue-{answer_id}"[^>]*>Continue</button>', page)

    set_max_tokens(guest, conversation, "")  # this time the model may finish
    async with guest.socket(conversation) as ws:
        await press_continue(ws, answer_id)
        _, frames, final = await collect_answer(ws, answer_id)

    # The answer was drawn streaming again with its text so far, then grew, then ended.
    first = frames[0]
    assert any(
        a.get("id") == f"message-{answer_id}" and a.get("data-status") == "streaming"
        for a in first.articles
    )
    assert before["content"][:20] in first.html
    assert final["data-status"] == "complete"

    # Upstream: the history, the cut answer as the assistant's, then "go on".
    requests = upstream.requests()
    sent = requests[-1]
    assert sent["messages"] == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": before["content"]},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    more = sent["text"]
    assert more and streamed_text(frames, answer_id) == more

    # One message: the texts joined, the figures added up, the new finish reason.
    export = guest.export(conversation)
    assert [m["role"] for m in export["messages"]] == ["user", "assistant"]
    after = answer_row(export, answer_id)
    assert after["content"] == before["content"] + more
    assert after["finish_reason"] == "stop"
    assert after["completion_tokens"] == before["completion_tokens"] + sent["tokens_sent"]
    assert after["prompt_tokens"] > before["prompt_tokens"]
    assert after["total_tokens"] == after["prompt_tokens"] + after["completion_tokens"]
    assert after["tokens_estimated"] is False
    assert after["total_ms"] > before["total_ms"]
    assert after["ttft_ms"] == before["ttft_ms"]

    article = article_of(guest.http.get(f"/c/{conversation}/").text, answer_id)
    assert "Continue</button>" not in article  # it finished this time
    assert f"{after['completion_tokens']} completion" in article


async def test_continue_is_refused_unless_cut_owned_and_idle(
    guest: Visitor, continue_app: App, upstream: Simulator
) -> None:
    # Not cut: an answer that finished by itself.
    whole = guest.new_conversation()
    async with guest.socket(whole) as ws:
        await send(ws, "Explain tides [whole]\n#sim tokens=8 tps=200 ttft=0.05")
        finished, _, _ = await collect_answer(ws)
        await press_continue(ws, finished)
        assert "Only an answer cut at the length limit can be continued." in await alert(ws)
    assert answer_row(guest.export(whole), finished)["status"] == "complete"

    # Not the owner's: another browser session, on its own conversation's socket.
    conversation, answer_id, _ = await cut_answer(guest, "[theirs]")
    stranger = Visitor(continue_app)
    try:
        own = stranger.new_conversation()
        async with stranger.socket(own) as ws:
            await press_continue(ws, answer_id)
            assert "Only the latest answer can be continued." in await alert(ws)
    finally:
        stranger.close()
    row = answer_row(guest.export(conversation), answer_id)
    assert (row["status"], row["finish_reason"]) == ("complete", "length")

    # Already running: a second Continue while the first still streams.
    count = len(upstream.requests())
    async with guest.socket(conversation) as ws:
        await press_continue(ws, answer_id)
        await press_continue(ws, answer_id)
        assert "An answer is still streaming" in await alert(ws)
        _, _, final = await collect_answer(ws, answer_id)
    assert final["data-status"] == "complete"
    assert len(upstream.requests()) == count + 1  # one continuation went upstream, not two


class Recorded:
    """A socket as the follower sees it, keeping what it was sent."""

    channel_name = "socket-1"
    language = "en"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, html: str) -> None:
        self.sent.append(html)

    def backlog(self) -> int:
        return 0

    async def close_behind(self) -> None:
        raise AssertionError("never behind here")


def frame(kind: FrameKind, seq: int, html: str) -> FrameEvent:
    return FrameEvent(type="chat.frame", kind=kind, conversation=7, answer=70, seq=seq,
                      origin=None, html=html, chrome="", worker="", followed=False)  # fmt: skip


@pytest.mark.parametrize(
    "shown", [pytest.param(4, id="saw-the-final-frame"), pytest.param(DONE, id="read-it-saved")]
)
async def test_a_continuation_starts_afresh_on_a_socket_that_showed_the_answer(
    shown: int,
) -> None:
    """Its frames are numbered past any its answer had (past ``DONE`` too, which a socket that
    was sent the saved answer holds), and past an earlier Continue's."""
    first = continuation_seq()
    time.sleep(0.002)
    assert DONE < first < continuation_seq() < 2**63
    socket = Recorded()
    follower = Follower(socket, source=None, chrome=False)  # type: ignore[arg-type]
    follower.seen[70] = shown
    for event in [frame("delta", 3, "stale"), frame("turn", first + 1, "again"),
                  frame("delta", first + 2, "more"), frame("final", first + 3, "end")]:  # fmt: skip
        await follower.deliver(event)
    follower.close()
    assert socket.sent == ["again", "more", "end"]
