"""The bytes of a response: ASGI plumbing, DashScope's compact JSON and the body writer.

Every reply goes through ``Wire`` so the wire-level options (``fragment`` cuts, ``crlf`` line
ends, ``keepalive`` comments) behave the same in both protocols and in every reply shape.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from simulator.options import SimOptions

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "Wire",
    "dumps",
    "read_body",
    "send_bytes",
    "send_json",
    "shuffled",
    "start_sse",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, the way DashScope writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def shuffled(obj: Any, rng: random.Random) -> Any:
    """``obj`` with every object's keys in random order (clients must not rely on order)."""
    if isinstance(obj, dict):
        keys = list(obj)
        rng.shuffle(keys)
        return {key: shuffled(obj[key], rng) for key in keys}
    if isinstance(obj, list):
        return [shuffled(item, rng) for item in obj]
    return obj


class Wire:
    """Writes response body bytes, optionally cut at random offsets and with CRLF endings.

    ``ping`` is the protocol's keep-alive comment: ``: keep-alive`` for compatible mode,
    ``:keepalive`` (as seen on Alibaba streams) for native.
    """

    def __init__(
        self, send: Send, opts: SimOptions, rng: random.Random, ping: str = ": keep-alive"
    ) -> None:
        self.send = send
        self.opts = opts
        self.rng = rng
        self.eol = "\r\n" if opts.crlf else "\n"
        self.ping = ping

    async def write(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if not self.opts.fragment:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
            return
        # Cut anywhere, including inside multi-byte UTF-8 characters and CR/LF pairs.
        pos = 0
        while pos < len(data):
            size = self.rng.randint(1, 24)
            piece = data[pos : pos + size]
            pos += size
            await self.send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)

    async def event(self, payload: str) -> None:
        # Keep-alive comments may also sit between an event's data line and its blank line.
        inner = ""
        if self.opts.keepalive and self.rng.random() < 0.05:
            inner = f"{self.ping}{self.eol}"
        await self.write(f"data: {payload}{self.eol}{inner}{self.eol}")

    async def frame(self, lines: Sequence[str]) -> None:
        """One native event: its lines, keep-alive comments between them if asked, blank line."""
        out: list[str] = []
        for line in lines:
            out.append(line + self.eol)
            if self.opts.keepalive and self.rng.random() < 0.1:
                out.append(self.ping + self.eol)
        out.append(self.eol)
        await self.write("".join(out))

    async def comment(self) -> None:
        await self.write(f"{self.ping}{self.eol}{self.eol}")

    async def close(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(
    send: Send, status: int, obj: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, dumps(obj).encode(), headers=headers)


async def start_sse(send: Send, request_id: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Response start of a 200 event stream, the same headers for both protocols."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream;charset=UTF-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", request_id.encode()),
                *extra,
            ],
        }
    )


async def read_body(receive: Receive) -> bytes | None:
    """The full request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
