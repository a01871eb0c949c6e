"""How many bytes a socket has queued but not yet sent.

Daphne hands each frame to Twisted at once (``transport.write`` never blocks); what the peer
does not read piles up in the transport's buffer, without limit. Daphne calls the application
with ``send=functools.partial(server.handle_reply, protocol)``, so the protocol, and through it
the transport, is reachable from the consumer. The kernel's send buffer in front of it is
capped (``KERNEL_SEND_BUFFER``), or Linux would take megabytes per socket before the transport
held a byte. Anything else (channels' test communicator, an
unknown server) has no such buffer to read: ``backlog_reader`` returns ``None`` and sockets are
not bounded there. Twisted's TCP transport keeps unsent bytes in ``dataBuffer`` (from
``offset``) and ``_tempDataBuffer`` (``_tempDataLen`` bytes) — versions pinned in
requirements.txt; ``tests/test_live_follower.py`` reads a real Daphne socket to guard it.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable
from typing import Any

# The kernel's own send buffer for a websocket, in bytes. Linux grows it up to 4 MB per socket
# (net.ipv4.tcp_wmem) before the transport sees any backlog; chat frames need far less.
KERNEL_SEND_BUFFER = 64 * 1024


def server_send(send: Any) -> Any:
    """The server's own ``send`` under channels' session wrapper (which only acts on HTTP
    responses): frames go straight to it."""
    while True:
        owner = getattr(send, "__self__", None)
        if owner is not None and hasattr(owner, "real_send"):
            send = owner.real_send
        elif hasattr(send, "__wrapped__"):
            send = send.__wrapped__
        else:
            return send


def backlog_reader(send: Any) -> Callable[[], int] | None:
    """A function returning the bytes queued on this socket's transport, if it can be read."""
    send = server_send(send)
    if not isinstance(send, functools.partial) or not send.args:
        return None
    transport = getattr(send.args[0], "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer"):
        return None
    raw = getattr(transport, "socket", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):  # a closed socket: nothing to bound
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
    return functools.partial(unsent_bytes, transport)


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport that the kernel has not taken yet."""
    buffered = len(transport.dataBuffer) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


def close_with(send: Any, code: int, reason: str) -> bool:
    """Close a Daphne websocket with any code, ``1013`` included (autobahn's ``sendClose``
    takes only 1000 and 3000-4999, so Daphne's ASGI close refuses the rest). False when this is
    not Daphne: the caller closes through ASGI instead."""
    send = server_send(send)
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    close_frame = getattr(protocol, "sendCloseFrame", None)
    if close_frame is None:
        return False
    close_frame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)
    return True
