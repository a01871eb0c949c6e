"""Talking over the chat's websocket as the page does: send a message, read frames until an
answer is final."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.support.frames import Frame


async def send(ws: Any, message: str, **extra: Any) -> None:
    """What the composer sends on Enter (htmx's ws-send, headers included)."""
    await ws.send(json.dumps({"action": "send", "message": message, "HEADERS": {}, **extra}))


async def collect_answer(
    ws: Any, answer_id: int | None = None, timeout: float = 30.0
) -> tuple[int, list[Frame], dict[str, str]]:
    """Read frames until the answer (by default the next new one) is final.

    Returns its id, the frames read and the final article's attributes.
    """
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not finish in time")
        raw = await asyncio.wait_for(ws.recv(), remaining)
        frame = Frame(str(raw), time.monotonic())
        frames.append(frame)
        if answer_id is None:
            for article in frame.articles:
                if (
                    article.get("data-role") == "assistant"
                    and article.get("data-status") == "streaming"
                ):
                    answer_id = int(article["id"].removeprefix("message-"))
        if answer_id is not None and (final := frame.final_for(answer_id)):
            return answer_id, frames, final


async def first_delta(ws: Any, timeout: float = 10.0) -> int:
    """Read until a frame carries an answer's text; that answer's id."""
    while True:
        frame = Frame(str(await asyncio.wait_for(ws.recv(), timeout)), time.monotonic())
        if frame.deltas:
            return frame.deltas[0][0]
