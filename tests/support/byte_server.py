"""A byte-scripted upstream: a real HTTP server on loopback that answers every request with
exactly the bytes a test scripts, each piece in its own TCP write with a pause between, so the
client's socket really receives them split where the test says (not where a library chose).

For what the simulator cannot produce on purpose: a BOM, a CR and its LF in two packets, one
byte per packet, HTTP chunk boundaries inside a UTF-8 character, malformed JSON.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class ByteScript:
    """The response: status, headers and body pieces, each written on its own."""

    pieces: Sequence[bytes]
    status: str = "200 OK"
    content_type: str = "text/event-stream"
    chunked: bool = False  # HTTP chunked transfer encoding, one HTTP chunk per piece
    pause: float = 0.002  # seconds between two writes (TCP_NODELAY: each is a packet)
    hold_open: float = 0.0  # seconds to keep the connection open after the last piece


@dataclass
class ByteServer:
    script: ByteScript
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def __aenter__(self) -> ByteServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def base_url(self, path: str = "v1") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        self.requests.append(head + await reader.readexactly(length))
        script = self.script
        framing = b"Transfer-Encoding: chunked" if script.chunked else b"Connection: close"
        writer.write(
            b"HTTP/1.1 " + script.status.encode() + b"\r\n"
            b"Content-Type: " + script.content_type.encode() + b"\r\n" + framing + b"\r\n\r\n"
        )
        await writer.drain()
        try:
            for piece in script.pieces:
                await asyncio.sleep(script.pause)
                if script.chunked:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    writer.write(piece)
                await writer.drain()
            if script.chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            await asyncio.sleep(script.hold_open)
        except ConnectionError:
            pass  # the client hung up (Stop, a timeout): what a real server sees too
        finally:
            writer.close()


def each_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]
