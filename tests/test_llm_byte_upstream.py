"""The hostile streams of ``test_llm_hostile_streams`` again, over a real socket: a byte-scripted
HTTP server writes each piece as its own TCP packet, so the client's real transport (aiohttp
under httpx) reassembles them, HTTP chunked framing included. The events must be the same as
for the stream delivered whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from chat.llm import (
    PROTOCOLS,
    ChatClient,
    Event,
    UpstreamProtocolError,
    UpstreamTimeout,
    make_http_client,
)
from tests.support.byte_server import ByteScript, ByteServer, each_byte
from tests.support.events import failure, text_of
from tests.support.sse import (
    BOM,
    CHINESE,
    EMOJI,
    MESSAGES,
    SEPARATORS,
    answer,
    answer_events,
    answer_frames,
    data_frame,
    with_line_ends,
)

HANG_AFTER = 10.0


@pytest.fixture
async def packet_http() -> AsyncIterator[httpx.AsyncClient]:
    """The app's own HTTP client, with a short idle timeout: a stall here is a test's."""
    client = make_http_client(connect_timeout=2.0, read_timeout=1.0)
    try:
        yield client
    finally:
        await client.aclose()


async def reply(
    http: httpx.AsyncClient, protocol: str, script: ByteScript, **client: float
) -> list[Event]:
    async with ByteServer(script) as server:
        path = "v1" if protocol == "openai" else "api/v1"
        chat = ChatClient(http, server.base_url(path), protocol=protocol, retries=0, **client)

        async def collect() -> list[Event]:
            return [e async for e in chat.stream_reply("qwen-plus", MESSAGES)]

        return await asyncio.wait_for(collect(), HANG_AFTER)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
async def test_one_byte_per_packet_keeps_chinese_and_emoji_whole(
    packet_http: httpx.AsyncClient, protocol: str, chunked: bool
) -> None:
    texts = CHINESE + EMOJI
    raw = BOM + answer(protocol, texts)
    script = ByteScript(each_byte(raw), chunked=chunked, pause=0.0005)
    events = await reply(packet_http, protocol, script)
    assert events == answer_events(protocol, texts)
    assert "\ufffd" not in text_of(events)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cr_and_lf_in_separate_packets_and_raw_line_separators(
    packet_http: httpx.AsyncClient, protocol: str
) -> None:
    raw = with_line_ends(answer(protocol, SEPARATORS), "\r\n")
    cut = [piece for part in raw.split(b"\r") for piece in (part, b"\r")][:-1]
    events = await reply(packet_http, protocol, ByteScript(cut))
    assert events == answer_events(protocol, SEPARATORS)
    assert "\u2028" in text_of(events) and "\u2029" in text_of(events)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_json_ends_the_answer_clearly_and_keeps_the_text_before(
    packet_http: httpx.AsyncClient, protocol: str
) -> None:
    good = answer_frames(protocol, ["前半", "部分"])[:2]
    broken = [*good, data_frame(protocol, "{not json")]
    events = await reply(packet_http, protocol, ByteScript(broken, hold_open=5.0))
    assert text_of(events) == "前半部分"
    assert isinstance(failure(events), UpstreamProtocolError)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stall_after_a_few_tokens_hits_the_idle_timeout(
    packet_http: httpx.AsyncClient, protocol: str
) -> None:
    script = ByteScript(answer_frames(protocol, ["only", " this"])[:2], hold_open=8.0)
    events = await reply(packet_http, protocol, script)
    assert text_of(events) == "only this"
    assert isinstance(failure(events), UpstreamTimeout)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_endless_keepalives_hit_the_overall_deadline(
    packet_http: httpx.AsyncClient, protocol: str
) -> None:
    first = answer_frames(protocol, ["so far"])[0]
    script = ByteScript([first] + [b": keep-alive\n\n"] * 400, pause=0.01)
    started = asyncio.get_running_loop().time()
    events = await reply(packet_http, protocol, script, total_timeout=1.5)
    assert asyncio.get_running_loop().time() - started < 3.0
    assert text_of(events) == "so far"
    error = failure(events)
    assert isinstance(error, UpstreamTimeout) and "in all" in error.message
