"""The load client: one websocket per stream, speaking the app's protocol or the baseline's.

It only records ``(time.time(), frame)`` while streams run and parses afterwards, because it
shares a core with the simulator: every microsecond it spends per frame is added to the
latency it measures. Sending is staggered so the streams' token clocks are out of phase, as
with real users, instead of all ticking together.

Everything that knows the app's frame HTML is in this module (``AppProtocol`` and the
``app_*`` helpers), and it relies only on markers meant to stay: the ``data-seq`` attribute of
a delta, the answer article's ``id="message-N"`` and its ``data-status`` (``streaming`` while
live, anything else once final). The rest of the markup may shrink without breaking the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import websockets

from tests.support.app import App

OPEN_CONCURRENCY = 50
"""Sockets opened at once: enough to be quick, few enough not to trip Daphne's backlog."""
STUCK_RCVBUF = 4096
"""Receive buffer of a socket that stops reading (the kernel doubles it): TCP backs up soon."""
TCPI_BYTES_RECEIVED = 128
"""Offset of ``tcpi_bytes_received`` (u64) in Linux's ``struct tcp_info`` (since 4.1; checked
against ``ss -tin``'s ``bytes_received``): the TCP payload bytes this socket has received."""

NEW_CONVERSATION = re.compile(r"/c/(\d+)/$")
ARTICLE_TAG = re.compile(r"<article\b[^>]*>")
ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')
# A delta: any element but an article that carries data-seq; its text runs to the next tag
# (the text is escaped, so it holds no "<").
SEQ_ELEMENT = re.compile(r'<(?!article\b)[A-Za-z][\w-]*\b[^>]*\bdata-seq="(\d+)"[^>]*>([^<]*)')
TAG = re.compile(r"<[^>]+>")


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


def ws_frame_bytes(payload: str) -> int:
    """Bytes of one unmasked server text frame sent uncompressed (its payload and header); with
    permessage-deflate the payload is what the client library hands over, decompressed."""
    size = len(payload.encode())
    header = 2 if size < 126 else 4 if size < 65536 else 10
    return size + header


def tcp_bytes_received(ws: Any) -> int | None:
    """The TCP payload bytes a websocket's socket has received so far (Linux ``TCP_INFO``), or
    None where that cannot be read."""
    try:
        sock = ws.transport.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (AttributeError, OSError):
        return None
    if len(info) < TCPI_BYTES_RECEIVED + 8:
        return None  # a kernel older than 4.1
    return int(struct.unpack_from("=Q", info, TCPI_BYTES_RECEIVED)[0])


def ws_extensions(ws: Any) -> str:
    """The extensions the server accepted: its ``Sec-WebSocket-Extensions`` header ("" if none)."""
    response = getattr(ws, "response", None)
    return ", ".join(response.headers.get_all("Sec-WebSocket-Extensions")) if response else ""


async def ws_connect(
    url: str,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    *,
    stuck: bool,
    compress: bool = False,
) -> Any:
    """A client websocket; ``stuck``: a tiny kernel receive buffer and a one-message queue, so
    that once its owner stops calling ``recv`` TCP backs up into the server within a few KB.
    ``compress``: offer permessage-deflate as browsers do (``permessage-deflate;
    client_max_window_bits``); otherwise no extension is offered."""
    options: dict[str, Any] = {
        "max_size": None,
        "compression": "deflate" if compress else None,
        "ping_interval": None,  # no pings: a loaded server must not be judged dead mid-level
        "open_timeout": 30,
    }
    if stuck:
        host, port = re.match(r"ws://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STUCK_RCVBUF)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        options.update(sock=sock, max_queue=1)
    return await websockets.connect(
        url,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        **options,
    )


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


# --- The app: htmx ws-send JSON in, HTML frames out --------------------------------------------


@dataclass(frozen=True)
class AppSeat:
    """One browser: its session cookie, the worker it talks to and the conversation it uses."""

    app: App
    cookie: str
    conversation_id: int


def _attrs(tag: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in ATTRIBUTE.findall(tag)}


def app_articles(frame: str) -> list[dict[str, str]]:
    """The attributes of every ``<article>`` in a frame."""
    return [_attrs(tag) for tag in ARTICLE_TAG.findall(frame)]


def app_answer_id(frame: str) -> int | None:
    """The id of the answer a turn frame starts: its article is the one still streaming."""
    for article in app_articles(frame):
        if article.get("data-status") == "streaming" and article.get("data-role") != "user":
            ident = article.get("id", "")
            if ident.startswith("message-") and ident[8:].isdigit():
                return int(ident[8:])
    return None


def app_final_status(frame: str, answer_id: int) -> str | None:
    """The answer's final ``data-status`` if this frame ends it (its article, no longer live)."""
    if f'id="message-{answer_id}"' not in frame:  # cheap test first: it runs per frame
        return None
    for article in app_articles(frame):
        if article.get("id") == f"message-{answer_id}":
            status = article.get("data-status", "")
            if status and status != "streaming":
                return status
    return None


def app_deltas(frame: str) -> list[tuple[int, str]]:
    """``(seq, text)`` of every delta in a frame: the elements that carry ``data-seq``."""
    return [(int(seq), html.unescape(text)) for seq, text in SEQ_ELEMENT.findall(frame)]


class AppProtocol:
    """Streamside: a session and a conversation per stream, spread round-robin over workers."""

    name = "app"

    def __init__(self, apps: Sequence[App]) -> None:
        self.apps = list(apps)

    def prepare(self, count: int) -> list[AppSeat]:
        """One session per stream, each with a new conversation.

        A session cannot hold several new conversations (the app reuses its untouched one), and
        one session per stream is what real users look like anyway.
        """
        return [self._seat(self.apps[i % len(self.apps)]) for i in range(count)]

    @staticmethod
    def _seat(app: App) -> AppSeat:
        with httpx.Client(base_url=app.url, timeout=30, follow_redirects=True) as http:
            http.get("/").raise_for_status()
            token = http.cookies.get("csrftoken", "")
            response = http.post("/c/new/", headers={"X-CSRFToken": token}, follow_redirects=False)
            match = NEW_CONVERSATION.search(response.headers.get("location", ""))
            if response.status_code != 302 or match is None:
                raise RuntimeError(f"could not create a conversation: HTTP {response.status_code}")
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        return AppSeat(app, cookie, int(match.group(1)))

    async def connect(self, seat: AppSeat, *, stuck: bool = False, compress: bool = False) -> Any:
        url = f"ws://127.0.0.1:{seat.app.port}/ws/c/{seat.conversation_id}/"
        return await ws_connect(
            url, {"Cookie": seat.cookie}, seat.app.url, stuck=stuck, compress=compress
        )

    async def send(self, ws: Any, prompt: Prompt) -> None:
        await ws.send(json.dumps({"action": "send", "message": prompt.text, "HEADERS": {}}))

    def watch(self, record: StreamRecord, raw: str) -> bool:
        if record.answer_id is None:
            record.answer_id = app_answer_id(raw)
        elif (status := app_final_status(raw, record.answer_id)) is not None:
            record.final_status = status
            return True
        if 'class="alert"' in raw:
            record.error = "alert: " + html.unescape(TAG.sub("", raw)).strip()
            return True
        return False

    def parse(self, record: StreamRecord) -> list[ParsedFrame]:
        out = []
        for index, (at, raw) in enumerate(record.frames):
            size = ws_frame_bytes(raw)
            deltas = tuple(app_deltas(raw))
            if deltas:
                kind = "delta"
            elif record.answer_id is not None and app_final_status(raw, record.answer_id):
                kind = "final"
            else:
                kind = "turn" if index == 0 else "other"
            out.append(ParsedFrame(at, size, kind, deltas))
        return out


# --- The baseline relay: {"prompt"} in, {"d": delta} ... {"done": true} out ------------------


class BaselineProtocol:
    """``bench.baseline``: no session, no conversation, just a socket and a prompt."""

    name = "baseline"

    def __init__(self, port: int) -> None:
        self.port = port

    def prepare(self, count: int) -> list[None]:
        return [None] * count

    async def connect(self, seat: None, *, stuck: bool = False, compress: bool = False) -> Any:
        return await ws_connect(f"ws://127.0.0.1:{self.port}/ws/", stuck=stuck, compress=compress)

    async def send(self, ws: Any, prompt: Prompt) -> None:
        await ws.send(json.dumps({"prompt": prompt.text}))

    def watch(self, record: StreamRecord, raw: str) -> bool:
        if raw.startswith('{"d"'):
            return False
        if raw.startswith('{"done"'):
            record.final_status = "complete"
        else:
            record.error = raw[:200]
        return True

    def parse(self, record: StreamRecord) -> list[ParsedFrame]:
        out = []
        for seq, (at, raw) in enumerate(record.frames):
            message = json.loads(raw)
            if "d" in message:
                out.append(ParsedFrame(at, ws_frame_bytes(raw), "delta", ((seq, message["d"]),)))
            else:
                kind = "final" if message.get("done") else "other"
                out.append(ParsedFrame(at, ws_frame_bytes(raw), kind))
        return out


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
