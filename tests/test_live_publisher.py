"""The publisher and the reader's pacing, without Daphne, a database or a channel layer.

A fake upstream client yields the tokens a test feeds it; a recording follower stands for this
worker's sockets and a recording layer for Redis. What is checked is what a socket would get.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

from chat import llm
from chat.generation.pacing import QUIET_LAG, Pacer, Turnstile
from chat.generation.pipeline import AnswerRun, Publisher
from chat.generation.state import Generation
from chat.generation.turns import Turn
from chat.live.hub import LiveHub
from chat.live.protocol import FOLLOW_EVENT, UNFOLLOW_EVENT, Follow, FrameEvent, Unfollow
from chat.models import Message
from chat.rendering import fragments
from chat.timeline import Step, decode

CONVERSATION = 3


class FeedClient:
    """An upstream whose tokens the test hands over one by one (``None`` ends the reply)."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue[str | None] = asyncio.Queue()

    async def stream_reply(self, *args: Any, **kwargs: Any) -> AsyncGenerator[llm.Event, None]:
        while (text := await self.feed.get()) is not None:
            yield llm.TextDelta(text)
        yield llm.Finished("stop")


class Recorder:
    """A socket of this worker, as the hub sees it."""

    def __init__(self) -> None:
        self.frames: list[FrameEvent] = []

    async def deliver(self, event: FrameEvent) -> None:
        self.frames.append(event)


class RecordingLayer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append((group, message))

    async def group_add(self, group: str, channel: str) -> None:
        pass


def generation(answer_id: int = 30) -> Generation:
    answer = fragments.MessageView(
        id=answer_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, content="",
        conversation_id=CONVERSATION, is_latest=True,
    )  # fmt: skip
    turn = Turn(
        conversation_id=CONVERSATION, model="m", stream=True, context=[], answer=answer,
        upstream=None,  # type: ignore[arg-type]  # not used by the reader
        language="en",
    )  # fmt: skip
    return Generation(turn=turn)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def texts(frames: list[FrameEvent]) -> list[str]:
    """The raw text each delta frame appended."""
    return [m.group(1) for f in frames if (m := re.search(r'data-seq="\d+">([^<]*)<', f["html"]))]


async def start_reader(
    pacer: Pacer, answer: Generation | None = None
) -> tuple[FeedClient, Recorder, asyncio.Task[None]]:
    """The reader of ``answer`` (a new one by default) publishing to one recording socket."""
    hub = LiveHub(None, cross_process=False)
    recorder = Recorder()
    await hub.follow(CONVERSATION, recorder)
    client = FeedClient()
    run = AnswerRun(
        answer or generation(), client, Publisher(hub, None),  # type: ignore[arg-type]
        pacer, Turnstile(), save_timeout=1, on_end=lambda g: None,
    )  # fmt: skip
    return client, recorder, asyncio.create_task(run.read())


async def test_a_worker_that_keeps_up_sends_every_token_the_moment_it_arrives() -> None:
    client, socket, reader = await start_reader(Pacer(max_window=0.03))
    for index, token in enumerate(["Hello", " there", ",", " friend"]):
        await client.feed.put(token)
        # Delivered before the next token exists: no window, no timer.
        await until(lambda index=index: len(socket.frames) == index + 1)
    assert texts(socket.frames) == ["Hello", " there", ",", " friend"]
    assert [f["seq"] for f in socket.frames] == [1, 2, 3, 4]
    await client.feed.put(None)
    await reader


async def test_a_lagging_worker_sends_the_first_token_at_once_then_coalesces() -> None:
    pacer = Pacer(max_window=1.0)
    pacer.window = 0.05  # as if the loop lagged: a frame, then a window before the next
    client, socket, reader = await start_reader(pacer)
    await client.feed.put("First")
    await until(lambda: len(socket.frames) == 1)  # the first token never waits
    for token in ["a", "b", "c"]:
        client.feed.put_nowait(token)
    await until(lambda: len(socket.frames) == 2)
    assert texts(socket.frames) == ["First", "abc"]  # the window's tokens share one frame
    await client.feed.put(None)
    await reader


def test_the_window_follows_the_loops_lag_and_is_capped() -> None:
    pacer = Pacer(max_window=0.03)
    for _ in range(20):
        pacer.measure(QUIET_LAG / 4)
    assert pacer.window == 0.0
    for _ in range(20):
        pacer.measure(0.008)
    assert pacer.window == pytest.approx(0.016, rel=0.05)
    for _ in range(20):
        pacer.measure(0.5)
    assert pacer.window == 0.03
    assert Pacer(max_window=0).window == 0.0


async def test_deltas_cross_the_layer_only_while_another_worker_follows() -> None:
    layer = RecordingLayer()
    hub = LiveHub(layer, cross_process=True)
    hub.worker = "worker-a"
    hub.ready.set()
    local = Recorder()
    await hub.follow(CONVERSATION, local)
    publisher = Publisher(hub, layer)
    answer = generation()
    layer.sent.clear()

    await publisher.publish(answer, "turn", kind="turn")
    await publisher.publish(answer, "d1", kind="delta")
    crossed = [m["kind"] for _, m in layer.sent]
    assert crossed == ["turn"]  # nobody else follows: the delta stayed here
    assert [f["seq"] for f in local.frames] == [1, 2]

    hub.heard(Follow(type=FOLLOW_EVENT, conversation=CONVERSATION, worker="worker-b"))
    await publisher.publish(answer, "d2", kind="delta")
    hub.heard(Unfollow(type=UNFOLLOW_EVENT, conversation=CONVERSATION, worker="worker-b"))
    await publisher.publish(answer, "d3", kind="delta")
    await publisher.publish(answer, "final", kind="final")
    crossed = [(m["kind"], m["seq"], m["followed"]) for _, m in layer.sent]
    assert crossed == [("turn", 1, False), ("delta", 3, True), ("final", 5, False)]
    assert [f["seq"] for f in local.frames] == [1, 2, 3, 4, 5]  # every one, directly


async def test_presence_expires_unless_repeated() -> None:
    now = [100.0]
    hub = LiveHub(RecordingLayer(), cross_process=True, clock=lambda: now[0])
    hub.heard(Follow(type=FOLLOW_EVENT, conversation=CONVERSATION, worker="worker-b"))
    assert hub.followed_elsewhere(CONVERSATION)
    now[0] += 1000  # worker-b died without a word
    assert not hub.followed_elsewhere(CONVERSATION)


async def test_a_snapshot_shows_the_blocks_as_their_frames_drew_them_and_draws_no_markdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket joining a long answer costs the worker no markdown: the finished blocks are
    kept as the delta frames drew them; only the unfinished tail is new."""
    answer = generation()
    client, recorder, reader = await start_reader(Pacer(max_window=0), answer)
    for token in ["# Title\n\n", "Some **bold** text.\n\n", "```py\nx = 1\n```\n\n", "tail"]:
        await client.feed.put(token)
    await until(lambda: len(recorder.frames) == 4)
    drawn = "".join(
        m.group(1)
        for f in recorder.frames
        if (
            m := re.search(
                r'beforeend:#answer-30-md">(.*?)</div><div id="answer-30-text"', f["html"], re.S
            )
        )
    )

    def no_markdown(text: str) -> str:
        raise AssertionError("a snapshot drew markdown")

    monkeypatch.setattr(fragments, "render_markdown", no_markdown)
    snapshot = answer.snapshot()
    assert f'id="answer-30-md">{drawn}</div>' in snapshot["html"]
    assert "<h1>Title</h1>" in drawn and "<strong>bold</strong>" in drawn
    assert ">tail<" in snapshot["html"] and snapshot["seq"] == 4
    await client.feed.put(None)
    await reader


async def test_the_answers_timeline_holds_each_frame_as_it_went_out() -> None:
    """What a replay plays back (``chat.timeline``): one step per delta frame, at its time,
    with the characters it added; a non-streamed answer is one step, at its end."""
    answer = generation()
    client, _, reader = await start_reader(Pacer(max_window=0), answer)
    for token in ["Hello", " there", "!"]:
        await client.feed.put(token)
        await until(lambda: len(decode(bytes(answer.timeline))) == len(answer.text))
        await asyncio.sleep(0.02)
    await client.feed.put(None)
    await reader
    steps = decode(answer.outcome()["timeline"])
    assert [s.text for s in steps] == [5, 6, 1]
    assert steps[0].at_ms <= steps[1].at_ms - 15 and steps[1].at_ms <= steps[2].at_ms - 15

    whole = generation(31)
    whole.turn = dataclasses.replace(whole.turn, stream=False)
    whole.text = ["Hello", " there"]
    whole.finished_at = whole.started + 1.5
    assert decode(whole.outcome()["timeline"]) == [Step(1500, 11)]


async def test_answers_that_end_together_pass_the_turnstile_one_per_pass_of_the_loop() -> None:
    """What arrives while one answer draws its end runs before the next answer draws its own
    (with a plain lock, the second answer, woken in the same pass, went straight through)."""
    turnstile = Turnstile()
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def end(name: str) -> None:
        async with turnstile:
            seen.append(f"{name} drawn")
            loop.call_soon(seen.append, f"tokens that came after {name}")

    await asyncio.gather(end("first"), end("second"), end("third"))
    assert seen == [
        "first drawn",
        "tokens that came after first",
        "second drawn",
        "tokens that came after second",
        "third drawn",
        "tokens that came after third",
    ]


async def test_an_end_that_fails_opens_the_turnstile_for_the_next() -> None:
    turnstile = Turnstile()

    async def failing() -> None:
        async with turnstile:
            raise RuntimeError("the article could not be drawn")

    with pytest.raises(RuntimeError):
        await failing()
    async with asyncio.timeout(2):
        async with turnstile:
            pass
