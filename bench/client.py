"""The load client: browser-like sessions, one websocket and one conversation per stream.

It only records ``(time.time(), frame)`` while streams run and parses afterwards, because it
shares a core with the simulator: every microsecond it spends per frame is added to the
latency it measures. Sending is staggered so the streams' token clocks are out of phase, as
with real users, instead of all ticking together.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import App, Frame, Visitor, send

OPEN_CONCURRENCY = 50
"""Sockets opened at once: enough to be quick, few enough not to trip Daphne's backlog."""

NEW_CONVERSATION = re.compile(r"/c/(\d+)/$")
ANSWER_ARTICLE = re.compile(
    r'<article id="message-(\d+)"[^>]*data-role="assistant"[^>]*data-status="streaming"'
)


@dataclass
class StreamRecord:
    """What one stream's socket received, timed with the simulator's clock (``time.time``)."""

    index: int
    conversation_id: int
    marker: str
    prompt: str
    sent_at: float = 0.0
    frames: list[tuple[float, str]] = field(default_factory=list)
    answer_id: int | None = None
    final: dict[str, str] | None = None
    error: str = ""

    @property
    def finished_at(self) -> float | None:
        return self.frames[-1][0] if self.final is not None and self.frames else None


@dataclass(frozen=True)
class Prompt:
    """One message to send: a unique marker (to find it in the simulator's log) and options."""

    marker: str
    text: str


def make_prompt(marker: str, *, topic: str = "streaming latency", **sim: Any) -> Prompt:
    """A user message whose ``#sim`` line sets this request's upstream behaviour."""
    options = " ".join(f"{key}={value}" for key, value in sim.items())
    return Prompt(marker, f"{marker}: tell me about {topic}\n#sim {options}")


@dataclass(frozen=True)
class Seat:
    """One browser: its session (cookies) and the conversation its stream uses."""

    visitor: Visitor
    conversation_id: int


def _new_conversation(visitor: Visitor) -> int:
    """``Visitor.new_conversation`` without following the redirect (no page render)."""
    token = visitor.http.cookies.get("csrftoken", "")
    response = visitor.http.post("/c/new/", headers={"X-CSRFToken": token}, follow_redirects=False)
    match = NEW_CONVERSATION.search(response.headers.get("location", ""))
    if response.status_code != 302 or match is None:
        raise RuntimeError(f"could not create a conversation: HTTP {response.status_code}")
    return int(match.group(1))


def create_seats(app: App, count: int) -> list[Seat]:
    """One session per stream, each with a new conversation.

    A session cannot hold several new conversations (the app reuses its untouched one), and
    one session per stream is what real users look like anyway. Each session's HTTP client is
    closed at once; its cookies stay readable for the websocket handshake.
    """
    seats: list[Seat] = []
    for _ in range(count):
        visitor = Visitor(app)
        try:
            seats.append(Seat(visitor, _new_conversation(visitor)))
        finally:
            visitor.close()
    return seats


async def open_sockets(seats: Sequence[Seat]) -> list[Any]:
    """One connected websocket per seat (closed by ``close_sockets``)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(seat: Seat) -> Any:
        async with gate:
            return await seat.visitor.socket(seat.conversation_id)

    results = await asyncio.gather(*(open_one(s) for s in seats), return_exceptions=True)
    sockets = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await close_sockets(sockets)
        raise RuntimeError(f"{len(failures)} websockets failed to open: {failures[0]!r}")
    return sockets


async def close_sockets(sockets: Sequence[Any]) -> None:
    async def close(ws: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)

    await asyncio.gather(*(close(ws) for ws in sockets))


def _answer_id(frame: str) -> int | None:
    match = ANSWER_ARTICLE.search(frame)
    return int(match.group(1)) if match else None


def _final(frame: str, answer_id: int | None) -> dict[str, str] | None:
    """The final article's attributes if this frame ends the answer (cheap test first)."""
    if answer_id is None or 'hx-swap-oob="outerHTML"' not in frame:
        return None
    return Frame(frame, 0.0).final_for(answer_id)


async def _stream(ws: Any, record: StreamRecord, start_at: float, deadline: float) -> None:
    """Send at ``start_at`` (loop time), then record frames until the answer is final."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    record.sent_at = time.time()
    frames = record.frames
    try:
        async with asyncio.timeout_at(deadline):
            await send(ws, record.prompt)
            while True:
                raw = await ws.recv()
                now = time.time()
                frames.append((now, raw))
                if record.answer_id is None:
                    record.answer_id = _answer_id(raw)
                elif (final := _final(raw, record.answer_id)) is not None:
                    record.final = final
                    return
                if 'class="alert"' in raw:
                    record.error = "alert: " + html.unescape(re.sub(r"<[^>]+>", "", raw))
                    return
    except TimeoutError:
        record.error = "timed out before the final frame"
    except Exception as exc:  # a closed socket must not abort the whole level
        record.error = f"{type(exc).__name__}: {exc}"


async def run_streams(
    seats: Sequence[Seat],
    prompts: Sequence[Prompt],
    *,
    stagger_s: float,
    timeout_s: float,
    on_start: Callable[[], Awaitable[None]] | None = None,
) -> list[StreamRecord]:
    """Open one socket per seat, send each prompt (staggered), collect every answer.

    ``on_start`` runs when the first message is about to go (e.g. to start a profiler), once
    all sockets are open, so the idle-socket cost is outside what it observes.
    """
    records = [
        StreamRecord(i, seat.conversation_id, p.marker, p.text)
        for i, (seat, p) in enumerate(zip(seats, prompts, strict=True))
    ]
    sockets = await open_sockets(seats)
    try:
        loop = asyncio.get_running_loop()
        if on_start is not None:
            await on_start()
        first = loop.time() + 0.05
        deadline = first + stagger_s + timeout_s
        step = stagger_s / len(records) if records else 0.0
        await asyncio.gather(
            *(
                _stream(ws, record, first + i * step, deadline)
                for i, (ws, record) in enumerate(zip(sockets, records, strict=True))
            )
        )
    finally:
        await close_sockets(sockets)
    return records
