"""An upstream cannot grow a worker's memory without bound: one SSE line or event past 1 MB,
or a whole (non-streamed) reply past 8 MB, ends the answer with a clear error, keeping the text
that streamed before it, instead of being held until the total timeout.

Against a real loopback server writing the bytes (``tests/support/byte_server.py``), read by
the app's own HTTP client. The server then keeps the connection open: an answer that ended on
anything but the cap would end on the idle timeout instead, with another error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from chat.llm import PROTOCOLS, ChatClient, Event, UpstreamProtocolError, make_http_client
from tests.support.byte_server import ByteScript, ByteServer
from tests.support.events import failure, text_of
from tests.support.sse import (
    MESSAGES,
    answer_events,
    answer_frames,
    data_frame,
    native_result,
    openai_chunk,
)

MB = 1024 * 1024
STREAM_CAP = "The model server sent a stream event larger than 1 MB."
REPLY_CAP = "The model server sent a reply larger than 8 MB."
HANG_AFTER = 20.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The app's own HTTP client; a short idle timeout, so an answer the cap did not end ends
    on it (a different error) well before the server lets go."""
    client = make_http_client(connect_timeout=2.0, read_timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


def in_pieces(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    """``data`` written 64 KB at a time, as a server streams a large body."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def reply(
    http: httpx.AsyncClient, protocol: str, script: ByteScript, *, stream: bool = True
) -> list[Event]:
    async with ByteServer(script) as server:
        path = "v1" if protocol == "openai" else "api/v1"
        chat = ChatClient(http, server.base_url(path), protocol=protocol, retries=0)

        async def collect() -> list[Event]:
            return [e async for e in chat.stream_reply("qwen-plus", MESSAGES, stream=stream)]

        return await asyncio.wait_for(collect(), HANG_AFTER)


def before(protocol: str) -> list[bytes]:
    """Two good frames: the text the reader already has when the flood begins."""
    return answer_frames(protocol, ["前半", "部分"])[:2]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_2_mb_line_that_never_ends_ends_the_answer_and_keeps_the_text_before(
    http: httpx.AsyncClient, protocol: str
) -> None:
    flood = b"data: " + b"x" * (2 * MB)  # no line break, ever
    script = ByteScript([*before(protocol), *in_pieces(flood)], hold_open=10.0)
    events = await reply(http, protocol, script)
    assert text_of(events) == "前半部分"
    error = failure(events)
    assert isinstance(error, UpstreamProtocolError) and error.message == STREAM_CAP


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_2_mb_line_that_ends_is_refused_too(http: httpx.AsyncClient, protocol: str) -> None:
    text = "x" * (2 * MB)
    big = data_frame(protocol, openai_chunk(text) if protocol == "openai" else native_result(text))
    script = ByteScript([*before(protocol), *in_pieces(big)], hold_open=10.0)
    events = await reply(http, protocol, script)
    assert text_of(events) == "前半部分"
    assert failure(events).message == STREAM_CAP


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_of_many_small_data_lines_is_capped_as_a_whole(
    http: httpx.AsyncClient, protocol: str
) -> None:
    """Each line short, but no blank line ever ends the event: its data would pile up."""
    lines = b"data: " + b"y" * 1000 + b"\n"
    script = ByteScript([*before(protocol), *in_pieces(lines * 2100)], hold_open=10.0)
    events = await reply(http, protocol, script)
    assert text_of(events) == "前半部分"
    assert failure(events).message == STREAM_CAP


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_large_delta_under_the_cap_still_streams(
    http: httpx.AsyncClient, protocol: str
) -> None:
    """A 900 KB delta (a pasted file echoed back, say) is below the cap and arrives whole."""
    pieces = ["前半", "y" * 900_000, "末尾"]
    frames = answer_frames(protocol, pieces)
    script = ByteScript([piece for frame in frames for piece in in_pieces(frame)])
    events = await reply(http, protocol, script)
    assert events == answer_events(protocol, pieces)


def whole_reply(protocol: str, content: str) -> bytes:
    """A non-streamed reply carrying ``content``, as each protocol sends it."""
    message = {"role": "assistant", "content": content}
    if protocol == "openai":
        body = {"id": "chatcmpl-big", "choices": [{"message": message, "finish_reason": "stop"}]}
    else:
        body = {"output": {"choices": [{"message": message, "finish_reason": "stop"}]}}
    return json.dumps(body).encode()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_9_mb_whole_reply_ends_the_answer_clearly(
    http: httpx.AsyncClient, protocol: str
) -> None:
    body = whole_reply(protocol, "z" * (9 * MB))
    script = ByteScript(in_pieces(body), content_type="application/json", hold_open=10.0)
    events = await reply(http, protocol, script, stream=False)
    assert text_of(events) == ""
    error = failure(events)
    assert isinstance(error, UpstreamProtocolError) and error.message == REPLY_CAP


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_whole_reply_under_the_cap_is_read(http: httpx.AsyncClient, protocol: str) -> None:
    body = whole_reply(protocol, "答" + "z" * (2 * MB))
    script = ByteScript(in_pieces(body), content_type="application/json")
    events = await reply(http, protocol, script, stream=False)
    assert text_of(events) == "答" + "z" * (2 * MB)
