"""A worker SIGKILLed mid-answer: the answer loses at most the last save interval of text and
is shown as interrupted, with Retry, by the next worker; never "streaming" forever."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app import start_app
from tests.support.frames import Frame, streamed_text
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.visitor import Visitor, answer_row
from tests.support.waiting import until

ORPHAN_AFTER_S = 3.0

pytestmark = [pytest.mark.live, pytest.mark.load]


async def test_killed_worker_loses_at_most_a_second_and_the_answer_is_interrupted(
    simulator: Simulator, tmp_path: Path
) -> None:
    env = {
        "LLM_API_BASE": simulator.base_url,
        "STREAM_SAVE_INTERVAL_MS": "1000",  # the default: the promise is "at most a second"
        "STREAM_ORPHAN_AFTER_MS": str(int(ORPHAN_AFTER_S * 1000)),
    }
    first, process = start_app(tmp_path, env)
    visitor = Visitor(first)
    frames: list[Frame] = []
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            await send(ws, "Long story [t-sigkill]\n#sim tokens=600 tps=40 ttft=0.05")
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(ws.recv(), 5)
                frames.append(Frame(str(raw), time.monotonic()))
            killed_at = time.monotonic()
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        visitor.close()
        stop_process(process)

    answer_id = next(
        int(a["id"].removeprefix("message-"))
        for f in frames
        for a in f.articles
        if a.get("data-role") == "assistant"
    )
    shown = streamed_text(frames, answer_id)
    older = streamed_text([f for f in frames if f.at < killed_at - 1.2], answer_id)
    assert len(shown) > 100

    second, process = start_app(tmp_path, env)
    try:
        client = httpx.Client(base_url=second.url, cookies=visitor.http.cookies, timeout=10)

        def settled() -> tuple[str, re.Match[str]] | None:
            """The page, once it shows the answer ended (silent past ORPHAN_AFTER_S)."""
            page = client.get(f"/c/{conversation}/").text
            article = re.search(rf'<article id="message-{answer_id}"[^>]*>', page)
            assert article, page[-2000:]
            return (page, article) if 'data-status="error"' in article.group(0) else None

        page, article = await until(settled, "the answer shown as ended", ORPHAN_AFTER_S + 10)
        assert "The server restarted before this answer finished." in page
        assert f'id="retry-{answer_id}"' in page
        saved = answer_row(client.get(f"/c/{conversation}/export.json").json(), answer_id)
        assert saved["error_kind"] == "interrupted" and saved["outcome"] == "interrupted"
        assert 'data-outcome="interrupted"' in article.group(0)
        # Everything saved was shown, and all but the last second of what was shown is saved.
        assert shown.startswith(saved["content"])
        assert len(saved["content"]) >= len(older) > 0
        client.close()
    finally:
        stop_process(process)
    upstream = simulator.request_for("[t-sigkill]")
    assert upstream["outcome"] == "disconnected"  # the dead worker's request ended with it


def refuses(port: int) -> bool:
    """Nothing accepts connections on ``port`` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def last_message_after_restart(
    tmp_path: Path, env: dict[str, str], visitor: Visitor, conversation: int
) -> dict[str, Any]:
    """Start a new worker on the same database and read the conversation's last message."""
    app, process = start_app(tmp_path, env)
    try:
        with httpx.Client(base_url=app.url, cookies=visitor.http.cookies, timeout=10) as client:
            return dict(client.get(f"/c/{conversation}/export.json").json()["messages"][-1])
    finally:
        stop_process(process)


async def first_frames(visitor: Visitor, conversation: int, prompt: str) -> None:
    """Send, and return once the answer is streaming."""
    async with visitor.socket(conversation) as ws:
        await send(ws, prompt)
        while True:
            frame = Frame(str(await asyncio.wait_for(ws.recv(), 5)), time.monotonic())
            if frame.deltas:
                return


async def test_sigterm_lets_an_answer_in_flight_finish(
    simulator: Simulator, tmp_path: Path
) -> None:
    env = {"LLM_API_BASE": simulator.base_url}
    app, process = start_app(tmp_path, env)
    visitor = Visitor(app)
    try:
        conversation = visitor.new_conversation()
        await first_frames(visitor, conversation, "Finish me [t-sigterm]\n#sim tokens=80 tps=40")
        process.terminate()  # SIGTERM, as systemd or Docker stop a worker
        # It stops accepting at once (a balancer moves new people on) while the answer finishes.
        await until(lambda: refuses(app.port), "the worker stopped accepting connections", 5)
        assert process.poll() is None
        assert process.wait(timeout=15) == 0
    finally:
        visitor.close()
        stop_process(process)
    saved = last_message_after_restart(tmp_path, env, visitor, conversation)
    assert saved["status"] == saved["outcome"] == "complete"
    assert saved["content"] == simulator.request_for("[t-sigterm]")["text"]


async def test_sigterm_saves_what_cannot_finish_within_the_grace(
    simulator: Simulator, tmp_path: Path
) -> None:
    env = {"LLM_API_BASE": simulator.base_url, "STREAM_SHUTDOWN_GRACE_MS": "1000"}
    app, process = start_app(tmp_path, env)
    visitor = Visitor(app)
    try:
        conversation = visitor.new_conversation()
        await first_frames(visitor, conversation, "Too long [t-sigterm-grace]\n#sim tokens=900")
        asked = time.monotonic()
        process.terminate()
        process.wait(timeout=15)
        # The 1 s grace, not the 20-odd s the answer would take (the rest is a loaded machine's
        # time to save and exit).
        assert time.monotonic() - asked < 10
    finally:
        visitor.close()
        stop_process(process)
    saved = last_message_after_restart(tmp_path, env, visitor, conversation)
    sent = simulator.request_for("[t-sigterm-grace]")
    assert saved["status"] == "error" and saved["outcome"] == "interrupted"
    assert saved["error_message"].startswith("The server stopped before this answer finished.")
    assert saved["content"] and sent["text"].startswith(saved["content"])
    assert sent["outcome"] == "disconnected"
