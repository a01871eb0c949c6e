"""The baseline relay's protocol for the load client: ``{"prompt"}`` in, ``{"d": delta}`` ...
``{"done": true}`` out.

The baseline (``bench.baseline``) has no sessions, conversations or HTML, so its side of the
client is this small; it speaks through the same ``StreamProtocol`` interface as the app's, so
every phase runs unchanged against either server.
"""

from __future__ import annotations

import json
from typing import Any

from bench.client import ParsedFrame, Prompt, StreamRecord
from bench.client_socket import ws_connect, ws_frame_bytes


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
