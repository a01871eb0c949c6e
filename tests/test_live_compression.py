"""permessage-deflate on the live sockets: offered by Daphne, answers arrive intact."""

from __future__ import annotations

import pytest

from tests.conftest import App, Simulator, Visitor, collect_answer, send, streamed_text

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
