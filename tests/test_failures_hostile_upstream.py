"""Hostile upstream answers beside ordinary ones, on one worker: a 2 MB single SSE line, and a
200 KB code fence that never closes, streamed token by token. The hostile answer ends with a
clear error (the 1 MB event cap) or completes; the ordinary answers streaming meanwhile (ten
sockets at 40 tokens/s) all complete exactly, and their per-token latency is printed (p99;
figures, not assertions: see ``tests/support/latency.py``).

The simulator makes both (``#sim huge=N``, ``#sim fence=N``: ``simulator/hostile.py``), in its
own protocol-faithful chunks, so the app reads them through its real client and pipeline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from simulator.options import SimOptionError, SimOptions, parse_options
from simulator.script import plan_answer
from tests.support.app import App, running_app
from tests.support.inbox import Inbox
from tests.support.latency import STAMP, summary, token_latencies
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.upstream import chat_body, content_of
from tests.support.visitor import Visitor
from tests.support.waiting import until

pytestmark = [pytest.mark.live, pytest.mark.load]

MB = 1024 * 1024
ORDINARY = 10
STREAM_CAP = "The model server sent a stream event larger than 1 MB."


# --- The simulator's hostile directives, on the wire -----------------------------------------


async def test_huge_sends_one_sse_line_of_that_many_bytes(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("One enormous token", tokens=9, huge=2 * MB, coalesce=1)
    async with sim_client.stream("POST", sim.chat_url, json=body) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    lines = raw.split(b"\n")
    longest = max(lines, key=len)
    assert len(longest) > 2 * MB and longest.startswith(b"data: ")
    assert json.loads(longest[6:])["choices"][0]["delta"]["content"] == "x" * (2 * MB)
    data = [line[6:].decode() for line in lines if line.startswith(b"data: ")]
    planned = plan_answer("qwen-plus", body["messages"], SimOptions(tokens=9, huge=2 * MB))
    assert content_of(data) == "".join(planned) and planned[4] == "x" * (2 * MB)
    assert sum(len(line) > 1000 for line in lines) == 1  # the other tokens as usual


async def test_fence_streams_an_unclosed_code_block_token_by_token(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("A long file", fence=20_000, coalesce=1)
    async with sim_client.stream("POST", sim.chat_url, json=body) as response:
        data = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    text = content_of(data)
    assert len(text) == 20_000 and text.count("```") == 1  # opened, never closed
    assert text.startswith("Here is the module:\n\n```python\n")
    tokens = [json.loads(d)["choices"][0]["delta"]["content"] for d in data[1:-3]]
    assert tokens[:2] == ["Here is the module:\n\n", "```python\n"]
    assert all(2 <= len(token) <= 8 for token in tokens[2:-1])  # the code, token by token


@pytest.mark.parametrize("key", ["huge", "fence"])
def test_the_hostile_sizes_are_bounded(key: str) -> None:
    assert parse_options({key: "0"}) == {key: 0}
    with pytest.raises(SimOptionError):
        parse_options({key: str(100 * MB)})


# --- A worker serving them beside ordinary answers -------------------------------------------


@pytest.fixture(scope="module")
def worker(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One worker of this module's own, talking to a simulator of its own (whose log then
    holds a 2 MB answer only this module reads)."""
    env = {"LLM_API_BASE": sim.base_url, "STREAM_SAVE_INTERVAL_MS": "1000"}
    with running_app(tmp_path_factory.mktemp("hostile"), env) as app:
        yield app


@pytest.fixture
def browsers() -> Iterator[list[Visitor]]:
    """The visitors a test opens, closed after it."""
    opened: list[Visitor] = []
    yield opened
    for visitor in opened:
        visitor.close()


@dataclass
class Tab:
    """One browser with one chat, its socket read in the background."""

    visitor: Visitor
    conversation: int
    inbox: Inbox
    marker: str
    answer: int = 0


async def hostile_beside_ordinary(
    worker: App, browsers: list[Visitor], name: str, hostile: str
) -> tuple[Tab, list[Tab]]:
    """Ten ordinary answers stream; once all have begun, ``hostile`` is sent on an eleventh
    socket. Returns when every answer has ended (each its own browser session, so no
    per-user limit interferes)."""
    tabs: list[Tab] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(ORDINARY + 1):
            visitor = Visitor(worker)
            browsers.append(visitor)
            conversation = visitor.new_conversation()
            ws = await stack.enter_async_context(visitor.socket(conversation))
            inbox = Inbox(ws)
            stack.callback(inbox.stop)
            tabs.append(Tab(visitor, conversation, inbox, f"[t-{name}-{i}]"))
        *ordinary, odd = tabs
        for i, tab in enumerate(ordinary):
            directive = f"#sim tokens=200 tps=40 ttft=0.05 stamp=1 seed={i}"
            await send(tab.inbox.ws, f"Ordinary {i} {tab.marker}\n{directive}")
        for tab in ordinary:
            tab.answer = await until(tab.inbox.first_answer, f"{tab.marker} begins", 20)
        await send(odd.inbox.ws, f"Hostile {odd.marker}\n{hostile}")
        odd.answer = await until(odd.inbox.first_answer, "the hostile answer begins", 20)
        for tab in tabs:
            await until(lambda tab=tab: tab.inbox.final(tab.answer), f"{tab.marker} ends", 40)
    return odd, ordinary


def check_ordinary(sim: Simulator, ordinary: list[Tab], label: str) -> None:
    """Every ordinary answer complete and exactly what the upstream sent; their p99 printed."""
    latencies: list[float] = []
    for tab in ordinary:
        final = tab.inbox.final(tab.answer)
        assert final is not None
        upstream = sim.request_for(tab.marker)
        assert final[1]["data-status"] == "complete", (tab.marker, final[1])
        assert tab.inbox.text(tab.answer) == upstream["text"]
        assert tab.visitor.export(tab.conversation)["messages"][-1]["content"] == upstream["text"]
        assert tab.inbox.alerts() == []
        mine = token_latencies(tab.inbox.frames, tab.answer)
        assert upstream["tokens_sent"] == 200
        assert len(mine) == len(STAMP.findall(upstream["text"]))  # one per chunk sent
        latencies += mine
    print(f"\n{label}: {ORDINARY} ordinary sockets' tokens: {summary(latencies)}")


async def test_a_2_mb_sse_line_ends_its_answer_clearly_and_the_others_stream_on(
    worker: App, sim: Simulator, browsers: list[Visitor]
) -> None:
    hostile = f"#sim huge={2 * MB} tokens=60 tps=40 ttft=0.05"
    odd, ordinary = await hostile_beside_ordinary(worker, browsers, "huge", hostile)
    frame, final = odd.inbox.final(odd.answer) or pytest.fail("no final frame")
    entry = sim.request_for(odd.marker)
    planned = plan_answer(entry["model"], entry["messages"], SimOptions(**entry["options"]))
    before = "".join(planned[: len(planned) // 2])  # the tokens before the huge one
    if final["data-status"] == "complete":  # read whole after all: then exactly
        assert odd.inbox.text(odd.answer) == "".join(planned)
    else:
        assert final["data-status"] == "error"
        assert STREAM_CAP in frame.html
        assert f'id="retry-{odd.answer}"' in frame.html
        saved = odd.visitor.export(odd.conversation)["messages"][-1]
        assert saved["error_message"] == STREAM_CAP
        shown = odd.inbox.text(odd.answer)
        assert shown and before.startswith(shown)  # the text before it, kept
        assert saved["content"] == shown
        assert entry["outcome"] == "disconnected"  # the app hung up on it
    check_ordinary(sim, ordinary, "2 MB line")
    print(f"2 MB line: the hostile answer ended {final['data-status']}")
    assert "Traceback" not in worker.log()


async def test_a_200_kb_unclosed_code_fence_completes_and_the_others_stream_on(
    worker: App, sim: Simulator, browsers: list[Visitor]
) -> None:
    hostile = "#sim fence=200000 tps=8000 ttft=0.05"
    odd, ordinary = await hostile_beside_ordinary(worker, browsers, "fence", hostile)
    _, final = odd.inbox.final(odd.answer) or pytest.fail("no final frame")
    entry = sim.request_for(odd.marker)
    assert entry["outcome"] == "complete" and len(entry["text"]) == 200_000
    # Legitimate, if long: it completes, every character shown live and saved.
    assert final["data-status"] == "complete", final
    assert odd.inbox.text(odd.answer) == entry["text"]
    assert odd.visitor.export(odd.conversation)["messages"][-1]["content"] == entry["text"]
    check_ordinary(sim, ordinary, "200 KB fence")
    frames = sum(1 for f in odd.inbox.frames if f.deltas)
    took = entry["finished_at"] - entry["first_token_at"]
    print(f"200 KB fence: {entry['tokens_sent']} tokens in {took:.1f} s, {frames} frames, complete")
    assert "Traceback" not in worker.log()


async def test_the_worker_answers_at_once_afterwards(worker: App) -> None:
    """Nothing of the hostile answers lingers: a new chat streams as usual."""
    visitor = Visitor(worker)
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            inbox = Inbox(ws)
            await send(ws, "After [t-after]\n#sim tokens=20 tps=200 ttft=0.01")
            answer = await until(inbox.first_answer, "the next answer begins", 10)
            _, final = await until(lambda: inbox.final(answer), "the next answer ends", 10)
            assert final["data-status"] == "complete"
            inbox.stop()
    finally:
        visitor.close()
