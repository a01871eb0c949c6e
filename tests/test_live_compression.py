"""permessage-deflate on the live sockets: offered by Daphne, answers arrive intact."""

from __future__ import annotations

import pytest

from tests.support.app import App
from tests.support.frames import streamed_text
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor

pytestmark = pytest.mark.live


async def test_sockets_are_compressed_and_answers_arrive_intact(
    app: App, visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate"), extensions
        await send(ws, "Compressed [t-deflate]\n#sim tokens=300 tps=400 ttft=0.05")
        answer_id, frames, final = await collect_answer(ws, timeout=30)
    assert final["data-status"] == "complete"
    assert streamed_text(frames, answer_id) == simulator.request_for("[t-deflate]")["text"]
