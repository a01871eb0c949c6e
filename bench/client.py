"""The load client: one websocket per stream, speaking the app's protocol or the baseline's.

It only records ``(time.time(), frame)`` while streams run and parses afterwards, because it
shares a core with the simulator: every microsecond it spends per frame is added to the
latency it measures. Sending is staggered so the streams' token clocks are out of phase, as
with real users, instead of all ticking together.

The app's protocol is in ``bench.client_app`` (everything that knows its frame HTML), the
baseline's in ``bench.client_baseline`` and the socket plumbing in ``bench.client_socket``;
this module holds what they share (prompts, records, frames, the protocol interface) and the
running of streams, which is the same for both servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.client_socket import tcp_bytes_received, ws_extensions

OPEN_CONCURRENCY = 50
"""Sockets opened at once: enough to be quick, few enough not to trip Daphne's backlog."""


@dataclass(frozen=True)
class Prompt:
    """One message to send: a unique marker (to find it in the simulator's log) and options."""

    marker: str
    text: str


def make_prompt(marker: str, *, topic: str = "streaming latency", **sim: Any) -> Prompt:
    """A user message whose ``#sim`` line sets this request's upstream behaviour."""
    options = " ".join(f"{key}={value}" for key, value in sim.items())
    return Prompt(marker, f"{marker}: tell me about {topic}\n#sim {options}")


@dataclass
class StreamRecord:
    """What one stream's socket received, timed with the simulator's clock (``time.time``)."""

    index: int
    marker: str
    prompt: str
    protocol: str
    sent_at: float = 0.0
    frames: list[tuple[float, str]] = field(default_factory=list)
    answer_id: int | None = None
    final_status: str | None = None
    error: str = ""
    # Only when the wire is counted (``run_streams(wire=True)``): the extensions the server
    # accepted (its Sec-WebSocket-Extensions header, "" for none) and the socket's TCP bytes
    # received when the message was sent and when the final frame arrived.
    extensions: str | None = None
    tcp_at_send: int | None = None
    tcp_at_final: int | None = None

    @property
    def wire_bytes(self) -> int | None:
        """TCP payload bytes the socket received from the send to the final frame."""
        if self.tcp_at_send is None or self.tcp_at_final is None:
            return None
        return self.tcp_at_final - self.tcp_at_send

    @property
    def finished_at(self) -> float | None:
        return self.frames[-1][0] if self.final_status is not None and self.frames else None


@dataclass(frozen=True)
class ParsedFrame:
    """One received frame, protocol-neutral: its wire size, kind and the deltas it carried."""

    at: float
    size: int
    kind: str  # "turn" (the app's first frame), "delta", "final" or "other"
    deltas: tuple[tuple[int, str], ...] = ()


class StreamProtocol(Protocol):
    """How the load client talks to one server under test."""

    name: str

    def prepare(self, count: int) -> list[Any]:
        """``count`` seats (whatever a socket needs before it opens); blocking, run in a thread."""
        ...

    async def connect(self, seat: Any, *, stuck: bool = False, compress: bool = False) -> Any: ...

    async def send(self, ws: Any, prompt: Prompt) -> None: ...

    def watch(self, record: StreamRecord, raw: str) -> bool:
        """Note what a frame says about the answer (cheaply: it runs per frame); True at the end."""
        ...

    def parse(self, record: StreamRecord) -> list[ParsedFrame]:
        """Every frame of a finished record, after the level (where time does not count)."""
        ...


# --- Running streams ------------------------------------------------------------------------


async def open_sockets(
    protocol: StreamProtocol, seats: Sequence[Any], *, compress: bool = False
) -> list[Any]:
    """One connected websocket per seat (closed by ``close_sockets``)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(seat: Any) -> Any:
        async with gate:
            return await protocol.connect(seat, compress=compress)

    results = await asyncio.gather(*(open_one(s) for s in seats), return_exceptions=True)
    sockets = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await close_sockets(sockets)
        raise RuntimeError(f"{len(failures)} websockets failed to open: {failures[0]!r}")
    return sockets


async def close_sockets(sockets: Sequence[Any]) -> None:
    """Close every socket, whatever state it is in: one that failed must not keep the rest open."""

    async def close(ws: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)

    await asyncio.gather(*(close(ws) for ws in sockets))


async def _stream(
    protocol: StreamProtocol,
    ws: Any,
    record: StreamRecord,
    start_at: float,
    deadline: float,
    *,
    wire: bool = False,
) -> None:
    """Send at ``start_at`` (loop time), then record frames until the answer is final;
    ``wire``: also read the socket's TCP byte counter at the send and at the final frame."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    frames = record.frames
    if wire:
        record.extensions = ws_extensions(ws)
        record.tcp_at_send = tcp_bytes_received(ws)
    try:
        async with asyncio.timeout_at(deadline):
            record.sent_at = time.time()
            await protocol.send(ws, Prompt(record.marker, record.prompt))
            while True:
                raw = await ws.recv()
                frames.append((time.time(), raw))
                if protocol.watch(record, raw):
                    if wire and record.final_status is not None:
                        record.tcp_at_final = tcp_bytes_received(ws)
                    return
    except TimeoutError:
        record.error = "timed out before the final frame"
    except Exception as exc:  # a closed socket must not abort the whole level
        record.error = f"{type(exc).__name__}: {exc}"


async def run_streams(
    protocol: StreamProtocol,
    seats: Sequence[Any],
    prompts: Sequence[Prompt],
    *,
    stagger_s: float,
    timeout_s: float,
    on_start: Callable[[], Awaitable[None]] | None = None,
    wire: bool = False,
) -> list[StreamRecord]:
    """Open one socket per seat, send each prompt (staggered), collect every answer.

    ``on_start`` runs when the first message is about to go (e.g. to start a profiler or a
    stuck reader), once all sockets are open, so the idle-socket cost is outside it.
    Every socket offers permessage-deflate, as browsers do (the app accepts it, so its figures
    include compressing; the baseline does not). ``wire``: note, per answer, the extensions
    accepted and the TCP bytes its socket received (one socket per answer, so the counter is
    that answer's alone).
    """
    records = [StreamRecord(i, p.marker, p.text, protocol.name) for i, p in enumerate(prompts)]
    sockets = await open_sockets(protocol, seats, compress=True)
    try:
        loop = asyncio.get_running_loop()
        if on_start is not None:
            await on_start()
        first = loop.time() + 0.05
        deadline = first + stagger_s + timeout_s
        step = stagger_s / len(records) if records else 0.0
        await asyncio.gather(
            *(
                _stream(protocol, ws, record, first + i * step, deadline, wire=wire)
                for i, (ws, record) in enumerate(zip(sockets, records, strict=True))
            )
        )
    finally:
        await close_sockets(sockets)
    return records


async def one_answer(
    protocol: StreamProtocol, seat: Any, prompt: Prompt, timeout_s: float = 30.0
) -> StreamRecord:
    """One answer on a socket of its own, opened (and settled) before the send is timed."""
    record = StreamRecord(0, prompt.marker, prompt.text, protocol.name)
    ws = await protocol.connect(seat)
    try:
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        await _stream(protocol, ws, record, loop.time(), loop.time() + timeout_s)
    finally:
        await close_sockets([ws])
    return record
