"""Socket plumbing of the load client: opening websockets and reading what they carried.

Kept apart from the protocols because it knows nothing of either server: how a socket is made
to stop reading (a tiny kernel buffer), what permessage-deflate it offers, and the byte counts
(a frame's size, the TCP bytes Linux counted) that the bytes figure is made of.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from typing import Any

import websockets

STUCK_RCVBUF = 4096
"""Receive buffer of a socket that stops reading (the kernel doubles it): TCP backs up soon."""
TCPI_BYTES_RECEIVED = 128
"""Offset of ``tcpi_bytes_received`` (u64) in Linux's ``struct tcp_info`` (since 4.1; checked
against ``ss -tin``'s ``bytes_received``): the TCP payload bytes this socket has received."""


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
