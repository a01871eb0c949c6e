"""A chat socket read in the background: every frame it receives (``Frame.at`` monotonic),
how it closed, and what the frames add up to, so a test can wait on events (``waiting.until``)
while it does other things: sends, floods, kills a worker."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from typing import Any

import websockets

from tests.support.frames import Frame, streamed_text

ALERT = re.compile(r'<p class="alert" role="alert">(.*?)</p>', re.S)


class Inbox:
    """Everything one socket receives, read by a task of its own until it closes."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                self.frames.append(Frame(str(raw), time.monotonic()))
        self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason or ""

    @property
    def closed(self) -> bool:
        return self._task.done()

    def stop(self) -> None:
        self._task.cancel()

    def first_answer(self, after: int = 0) -> int | None:
        """The first answer with text in the frames from index ``after`` on."""
        return next((a for f in self.frames[after:] for a, _, _ in f.deltas), None)

    def text(self, answer_id: int) -> str:
        return streamed_text(self.frames, answer_id)

    def final(self, answer_id: int) -> tuple[Frame, dict[str, str]] | None:
        """The frame showing the answer ended, and its article's attributes, once it came."""
        for frame in self.frames:
            if article := frame.final_for(answer_id):
                return frame, article
        return None

    def alerts(self) -> list[str]:
        """The alerts it was shown, in order (unescaped)."""
        return [html.unescape(text) for f in self.frames for text in ALERT.findall(f.html)]
