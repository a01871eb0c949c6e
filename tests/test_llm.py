"""Tests for chat/llm.py against recorded byte streams (tests/data/llm/*.sse).

Streams are replayed through ``httpx.MockTransport`` with an ``AsyncByteStream`` that yields
chosen chunks, so byte-boundary and line-ending traps are exercised exactly as on the wire.
Connect-refused and timeout cases use real loopback sockets, because MockTransport enforces
no timeouts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from chat.llm import (
    AiohttpReader,
    ChatClient,
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    TextDelta,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
    error_from_response,
    make_http_client,
    parse_chunk,
    parse_completion,
)
from tests.support.doubles import SSE, mock_http, pieces_replay, recording, replay
from tests.support.events import failure, text_of

BASE = "http://upstream.test:8000/v1"
KEY = "sk-live-Secret0123456789abcdef"
QWEN_ID = "chatcmpl-428b414f-fdd4-94c6-b179-8f576ad653a8"
QWEN_TEXT = "我是来自阿里云的超大规模语言模型,我叫通义千问。"
QWEN_EVENTS: list[Event] = [
    TextDelta("我是"),
    TextDelta("来自"),
    TextDelta("阿里"),
    TextDelta("云的超大规模语言"),
    TextDelta("模型,我叫通义千问"),
    TextDelta("。"),
    Finished("stop", request_id=QWEN_ID),
    Usage(prompt_tokens=22, completion_tokens=17, total_tokens=39),
]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "你是谁?"},
]


async def collect(client: ChatClient, **kwargs: Any) -> list[Event]:
    return [event async for event in client.stream_reply("qwen-plus", MESSAGES, **kwargs)]


# --------------------------------------------------------------------------------------------
# Recorded streams


async def test_qwen_sample_verbatim(closing: list[httpx.AsyncClient]) -> None:
    http, body, _ = replay([recording("openai_compat_qwen.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, KEY))
    assert events == QWEN_EVENTS
    assert text_of(events) == QWEN_TEXT
    assert body.closed


async def test_qwen_sample_split_at_every_byte_boundary(
    closing: list[httpx.AsyncClient],
) -> None:
    """Two reads per run, cut at each offset: inside 汉字, inside "data:", between CR and LF."""
    raw = recording("openai_compat_qwen.sse")
    http, pieces = pieces_replay()
    closing.append(http)
    client = ChatClient(http, BASE, KEY)
    for i in range(1, len(raw)):
        pieces[:] = [raw[:i], raw[i:]]
        assert await collect(client) == QWEN_EVENTS, f"split at byte {i}"


async def test_qwen_sample_one_byte_at_a_time(closing: list[httpx.AsyncClient]) -> None:
    raw = recording("openai_compat_qwen.sse")
    http, body, _ = replay([raw[i : i + 1] for i in range(len(raw))])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, KEY))
    assert events == QWEN_EVENTS
    assert body.sent == len(raw)


async def test_crlf_recording_split_at_every_byte_boundary(
    closing: list[httpx.AsyncClient],
) -> None:
    raw = recording("crlf.sse")
    assert b"\r\n\r\n" in raw, "recording lost its CRLF line endings"
    http, pieces = pieces_replay()
    closing.append(http)
    client = ChatClient(http, BASE)
    expected: list[Event] = [
        TextDelta("第一行"),
        TextDelta("🙂 emoji"),
        TextDelta("末尾"),
        Finished("stop", request_id="chatcmpl-0f3e"),
        Usage(4, 5, 9),
    ]
    for i in range(1, len(raw)):
        pieces[:] = [raw[:i], raw[i:]]
        assert await collect(client) == expected, f"split at byte {i}"


@pytest.mark.parametrize(
    ("name", "transform", "expected_text", "expected_tail"),
    [
        pytest.param(
            "thinking.sse",
            None,
            "我是通义千问，很高兴认识你！",
            [Finished("stop", request_id="chatcmpl-0f3e"), Usage(10, 36, 46)],
            id="thinking-null-content",
        ),
        pytest.param(
            "vllm_reasoning.sse",
            None,
            "Hello!",
            [Finished("length", request_id="chatcmpl-vllm")],
            id="vllm-reasoning-field",
        ),
        pytest.param(
            "finish_without_done.sse",
            None,
            "Hi there.",
            [Finished("stop", request_id="chatcmpl-llama"), Usage(5, 3, 8)],
            id="finish-without-done",
        ),
        pytest.param(
            "keepalive_comments.sse",
            None,
            "慢热",
            [Finished("stop", request_id="chatcmpl-0f3e"), Usage(3, 2, 5)],
            id="keepalive-comments",
        ),
        pytest.param(
            "unicode_separators.sse",
            None,
            "line\u2028separator next\u0085line para\u2029graph \x0b\x0c\x1c\x1d\x1e end",
            [Finished("stop", request_id="chatcmpl-0f3e")],
            id="u2028-u0085-in-content",
        ),
        pytest.param(
            "crlf.sse",
            None,
            "第一行🙂 emoji末尾",
            [Finished("stop", request_id="chatcmpl-0f3e"), Usage(4, 5, 9)],
            id="crlf",
        ),
        pytest.param(
            "crlf.sse",
            lambda raw: raw.replace(b"\r\n", b"\r"),
            "第一行🙂 emoji末尾",
            [Finished("stop", request_id="chatcmpl-0f3e"), Usage(4, 5, 9)],
            id="cr-only",
        ),
    ],
)
async def test_recorded_streams(
    closing: list[httpx.AsyncClient],
    name: str,
    transform: Callable[[bytes], bytes] | None,
    expected_text: str,
    expected_tail: list[Event],
) -> None:
    raw = recording(name)
    if transform is not None:
        raw = transform(raw)
    # Odd-sized reads so boundaries land inside multi-byte characters too.
    http, _, _ = replay([raw[i : i + 7] for i in range(0, len(raw), 7)])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert not any(isinstance(e, Failed) for e in events)
    assert text_of(events) == expected_text
    assert events[-len(expected_tail) :] == expected_tail
    assert all(e.text for e in events if isinstance(e, (TextDelta, ReasoningDelta)))


async def test_thinking_stream_reasoning_precedes_answer(
    closing: list[httpx.AsyncClient],
) -> None:
    http, _, _ = replay([recording("thinking.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ReasoningDelta"] * 3 + ["TextDelta"] * 2 + ["Finished", "Usage"]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == (
        "嗯，用户问我是谁。我应该介绍自己。"
    )


async def test_vllm_reasoning_field(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([recording("vllm_reasoning.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert events[:3] == [ReasoningDelta("Let me"), ReasoningDelta(" think."), TextDelta("Hello!")]


async def test_midstream_error_keeps_partial_text(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([recording("midstream_error.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert text_of(events) == "好的，下面是"
    error = failure(events)
    assert isinstance(error, UpstreamStreamError)
    assert error.kind == "stream_error"
    assert error.code == "data_inspection_failed"
    assert error.message == (
        "Output data may contain inappropriate content. (data_inspection_failed)"
    )


async def test_eof_without_finish_is_interrupted(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([recording("eof_without_finish.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert text_of(events) == "The answer is forty"
    error = failure(events)
    assert isinstance(error, UpstreamInterrupted)
    assert error.kind == "incomplete"
    assert error.message == (
        "The answer was cut off: the model server closed the stream before finishing."
    )


async def test_native_error_event_behind_http_200(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([recording("native_error_event.sse")])
    closing.append(http)
    error = failure(await collect(ChatClient(http, BASE)))
    assert isinstance(error, UpstreamStreamError)
    assert error.code == "Throttling.AllocationQuota"
    assert error.request_id == "5a9d3f1e-0b1c-9f7e-a8b2-7c1d2e3f4a5b"
    assert error.message.endswith("(Throttling.AllocationQuota)")


def sse_line(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def delta_chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


async def test_done_stops_reading(closing: list[httpx.AsyncClient]) -> None:
    chunks = [
        sse_line(delta_chunk("a", "stop")),
        b"data: [DONE] \n\n",
        sse_line(delta_chunk("never")),
    ]
    http, body, _ = replay(chunks, hang=True)
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert events == [TextDelta("a"), Finished("stop", request_id="chatcmpl-x")]
    assert body.closed


async def test_done_before_any_finish_reason_is_a_cut_off(closing: list[httpx.AsyncClient]) -> None:
    """llama.cpp's server abandons a reply for a newer request with a bare ``[DONE]``."""
    http, _, _ = replay([sse_line(delta_chunk("Half")), b"data: [DONE]\n\n"])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert events[0] == TextDelta("Half")
    assert isinstance(failure(events), UpstreamInterrupted)


async def test_only_usage_follows_finished_and_header_request_id_wins(
    closing: list[httpx.AsyncClient],
) -> None:
    """Only Usage may follow Finished: repeated finishes, late text and late errors are dropped."""
    usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    chunks = [
        sse_line(delta_chunk("a", "stop")),
        sse_line(delta_chunk("late", "stop")),
        sse_line(usage),
        sse_line({"error": {"message": "late error"}}),
        b"data: [DONE]\n\n",
    ]
    http, _, _ = replay(chunks, headers={**SSE, "x-request-id": "req-123"})
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert events == [TextDelta("a"), Finished("stop", request_id="req-123"), Usage(1, 1, None)]


async def test_malformed_json_is_protocol_error(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([sse_line(delta_chunk("ok")), b'data: {"choices": [\n\n'])
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert events[0] == TextDelta("ok")
    assert isinstance(failure(events), UpstreamProtocolError)


async def test_non_sse_content_type_is_protocol_error(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([b"<html>hello</html>"], headers={"content-type": "text/html"})
    closing.append(http)
    error = failure(await collect(ChatClient(http, BASE)))
    assert isinstance(error, UpstreamProtocolError)
    assert error.kind == "protocol"
    assert "text/html" in error.message


async def test_json_error_with_http_200_on_stream(closing: list[httpx.AsyncClient]) -> None:
    body = json.dumps({"error": {"message": "Model is loading", "code": "loading"}}).encode()
    http, _, _ = replay([body], headers={"content-type": "application/json"})
    closing.append(http)
    error = failure(await collect(ChatClient(http, BASE)))
    assert isinstance(error, UpstreamStreamError)
    assert error.message == "Model is loading (loading)"


@pytest.mark.parametrize(
    ("chunks", "expect_failure"),
    [
        pytest.param([sse_line(delta_chunk("par"))], True, id="cut-before-finish"),
        pytest.param([sse_line(delta_chunk("par", "stop"))], False, id="cut-after-finish"),
    ],
)
async def test_connection_cut_mid_stream(
    closing: list[httpx.AsyncClient], chunks: list[bytes], expect_failure: bool
) -> None:
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete body")
    http, _, _ = replay(chunks, fail_with=cut)
    closing.append(http)
    events = await collect(ChatClient(http, BASE))
    assert text_of(events) == "par"
    if expect_failure:
        assert isinstance(failure(events), UpstreamInterrupted)
    else:
        assert events[-1] == Finished("stop", request_id="chatcmpl-x")


# --------------------------------------------------------------------------------------------
# HTTP error statuses


QUOTA_ERROR = {"error": {"message": "Requests rate limit exceeded", "code": "limit_requests"}}


@pytest.mark.parametrize(
    ("status", "headers", "body", "error_type", "message", "attrs"),
    [
        pytest.param(
            401,
            {"content-type": "application/json"},
            b'{"error":{"message":"Incorrect API key provided. ","type":"invalid_request_error",'
            b'"param":null,"code":"invalid_api_key"},'
            b'"request_id":"e6f0dab6-4c2a-95da-981c-fb76a8ec32c9"}',
            UpstreamAuthError,
            "The model server rejected the API key (HTTP 401).",
            {"code": "invalid_api_key", "request_id": "e6f0dab6-4c2a-95da-981c-fb76a8ec32c9"},
            id="401-openai-json",
        ),
        pytest.param(
            401,
            {"content-type": "application/json"},
            b'{"code":"InvalidApiKey","message":"Invalid API-key provided.",'
            b'"request_id":"01415ff3-aaaa"}',
            UpstreamAuthError,
            "The model server rejected the API key (HTTP 401).",
            {"code": "InvalidApiKey", "request_id": "01415ff3-aaaa", "kind": "auth"},
            id="401-dashscope-native",
        ),
        pytest.param(
            403,
            {"content-type": "application/json"},
            b'{"error":{"message":"  Model access denied.\\n","code":"Model.AccessDenied"}}',
            UpstreamAuthError,
            "Access denied by the model server (HTTP 403): Model access denied.",
            {"code": "Model.AccessDenied", "status": 403},
            id="403",
        ),
        pytest.param(
            429,
            {"content-type": "application/json", "retry-after": "7"},
            json.dumps(QUOTA_ERROR).encode(),
            UpstreamRateLimited,
            "Rate limited by the model server; retry in 7 s.",
            {"retry_after": 7.0, "code": "limit_requests", "kind": "rate_limit"},
            id="429-retry-after",
        ),
        pytest.param(
            429,
            {"content-type": "application/json", "retry-after": "1.2"},
            json.dumps(QUOTA_ERROR).encode(),
            UpstreamRateLimited,
            "Rate limited by the model server; retry in 2 s.",
            {"retry_after": 1.2},
            id="429-retry-after-fraction",
        ),
        pytest.param(
            429,
            {"content-type": "application/json"},
            json.dumps(QUOTA_ERROR).encode(),
            UpstreamRateLimited,
            "Rate limited by the model server; please wait a moment and retry.",
            {"retry_after": None},
            id="429-no-retry-after",
        ),
        pytest.param(
            400,
            {"content-type": "application/json"},
            b'{"error":{"message":"<400> InternalError.Algo.InvalidParameter: Range of '
            b'max_tokens should be [1, 8192]","type":"invalid_request_error",'
            b'"code":"invalid_parameter_error"},"id":"chatcmpl-1"}',
            UpstreamBadRequest,
            "The model server refused the request (HTTP 400): <400> InternalError.Algo."
            "InvalidParameter: Range of max_tokens should be [1, 8192]",
            {"code": "invalid_parameter_error", "kind": "bad_request"},
            id="400-provider-message",
        ),
        pytest.param(
            400,
            {"content-type": "application/json"},
            recording("error_400_sse_framed.sse"),
            UpstreamBadRequest,
            "The model server refused the request (HTTP 400): "
            "Input data may contain inappropriate content.",
            {
                "code": "data_inspection_failed",
                "request_id": "5b1f0c6e-2a9d-9c43-a7e3-3f6c1e2d0b9a",
            },
            id="400-sse-framed-json-labelled",
        ),
        pytest.param(
            404,
            {"content-type": "application/json"},
            b'{"detail":"Model qwen-plus not found"}',
            UpstreamBadRequest,
            "The model server refused the request (HTTP 404): Model qwen-plus not found",
            {},
            id="404-detail",
        ),
        pytest.param(
            404,
            {"content-type": "text/plain"},
            b"",
            UpstreamBadRequest,
            "The model server refused the request (HTTP 404): nothing answers at "
            "upstream.test:8000/v1/chat/completions; check the base URL",
            {},
            id="404-empty-body",
        ),
        pytest.param(
            500,
            {"content-type": "application/json"},
            b'{"error":{"message":"An error occurred in model serving, error message is: '
            b'[Request rejected by inference engine!]","type":"internal_error",'
            b'"code":"internal_error"}}',
            UpstreamServerError,
            "The model server failed (HTTP 500): An error occurred in model serving, error "
            "message is: [Request rejected by inference engine!]",
            {"code": "internal_error", "kind": "server"},
            id="500",
        ),
        pytest.param(
            503,
            {"content-type": "application/json", "x-request-id": "req-503"},
            b'{"code":"ModelUnavailable","message":"Model is unavailable, please try later.",'
            b'"request_id":"abc-503"}',
            UpstreamServerError,
            "The model server failed (HTTP 503): Model is unavailable, please try later.",
            {"code": "ModelUnavailable", "request_id": "abc-503", "status": 503},
            id="503-native",
        ),
        pytest.param(
            502,
            {"content-type": "text/plain", "x-request-id": "req-502"},
            b"upstream connect error or disconnect/reset before headers.\n",
            UpstreamServerError,
            "The model server failed (HTTP 502): upstream connect error or disconnect/reset "
            "before headers.",
            {"code": None, "request_id": "req-502"},
            id="502-non-json-body",
        ),
        pytest.param(
            500,
            {"content-type": "application/json"},
            b"Internal Server Error",
            UpstreamServerError,
            "The model server failed (HTTP 500): Internal Server Error",
            {},
            id="500-json-label-non-json-body",
        ),
        pytest.param(
            502,
            {},
            b"",
            UpstreamServerError,
            "The model server failed (HTTP 502).",
            {},
            id="502-empty-body",
        ),
    ],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_http_error_statuses(
    closing: list[httpx.AsyncClient],
    status: int,
    headers: dict[str, str],
    body: bytes,
    error_type: type[UpstreamError],
    message: str,
    attrs: dict[str, Any],
    stream: bool,
) -> None:
    http, sent, _ = replay([body], status=status, headers=headers)
    closing.append(http)
    # One response's mapping; asking again after a 429 or 5xx is tested in test_llm_retries.
    events = await collect(ChatClient(http, BASE, KEY, retries=0), stream=stream)
    assert len(events) == 1
    error = failure(events)
    assert type(error) is error_type
    assert error.message == message
    assert str(error) == message
    assert error.status == status
    for name, value in attrs.items():
        assert getattr(error, name) == value, name
    assert sent.closed


def test_retry_after_http_date() -> None:
    when = formatdate(int(time.time()) + 30, usegmt=True)
    error = error_from_response(429, {"Retry-After": when}, b"", BASE)
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after is not None and 28 < error.retry_after <= 30
    assert error.message in {
        "Rate limited by the model server; retry in 29 s.",
        "Rate limited by the model server; retry in 30 s.",
    }


def test_retry_after_in_the_past_and_garbage() -> None:
    past = error_from_response(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"", BASE)
    assert past.retry_after == 0.0
    assert past.message == "Rate limited by the model server; retry in 1 s."
    garbage = error_from_response(429, {"retry-after": "soon"}, b"", BASE)
    assert garbage.retry_after is None


def test_error_body_snippet_is_truncated() -> None:
    error = error_from_response(500, {}, b"x" * 5000, BASE)
    assert len(error.message) < 300
    assert error.message.endswith("…")


def test_fastapi_validation_detail() -> None:
    body = json.dumps({"detail": [{"loc": ["body", "model"], "msg": "field required"}]})
    error = error_from_response(422, {}, body.encode(), BASE)
    assert error.message == "The model server refused the request (HTTP 422): field required"


# --------------------------------------------------------------------------------------------
# Real sockets: connect refused and timeouts


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_refused_is_unavailable(closing: list[httpx.AsyncClient]) -> None:
    port = closed_port()
    http = make_http_client(connect_timeout=2.0, read_timeout=2.0)
    closing.append(http)
    client = ChatClient(http, f"http://127.0.0.1:{port}/v1", KEY, retries=0)
    error = failure(await collect(client))
    assert isinstance(error, UpstreamUnavailable)
    assert error.kind == "unavailable"
    assert error.message == f"Could not reach the model server (127.0.0.1:{port}). Is it running?"


@pytest.fixture
async def silent_server() -> AsyncIterator[Callable[[bytes], Awaitable[int]]]:
    """Starts a loopback server that sends a given prefix and then never says another byte."""
    servers: list[asyncio.Server] = []

    async def start(prefix: bytes) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if prefix:
                writer.write(prefix)
                await writer.drain()
            await reader.read()  # until the client gives up and closes
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("prefix", "text"),
    [
        pytest.param(b"", "", id="no-answer"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(sse_line(delta_chunk("部分")))
            + sse_line(delta_chunk("部分"))
            + b"\r\n",
            "部分",
            id="stalls-mid-stream",
        ),
    ],
)
async def test_read_timeout(
    closing: list[httpx.AsyncClient],
    silent_server: Callable[[bytes], Awaitable[int]],
    prefix: bytes,
    text: str,
) -> None:
    port = await silent_server(prefix)
    http = make_http_client(connect_timeout=2.0, read_timeout=0.2)
    closing.append(http)
    started = time.monotonic()
    events = await collect(ChatClient(http, f"http://127.0.0.1:{port}/v1"))
    assert time.monotonic() - started < 2.0
    assert text_of(events) == text
    error = failure(events)
    assert isinstance(error, UpstreamTimeout)
    assert error.kind == "timeout"
    assert error.message == "Request timed out, please try again later."


def test_make_http_client_settings() -> None:
    http = make_http_client(connect_timeout=3.0, read_timeout=120.0, max_connections=500)
    assert http.timeout == httpx.Timeout(connect=3.0, read=120.0, write=3.0, pool=3.0)
    transport = http._transport  # no public accessor
    assert isinstance(transport, AiohttpReader)
    assert transport.limits.max_connections == 500
    assert transport.limits.max_keepalive_connections == 500


# --------------------------------------------------------------------------------------------
# What is sent


async def test_request_streaming_with_key_and_options(closing: list[httpx.AsyncClient]) -> None:
    http, _, seen = replay([recording("openai_compat_qwen.sse")])
    closing.append(http)
    options = {"temperature": 0.3, "enable_thinking": False, "sim": {"scenario": "happy"}}
    await collect(ChatClient(http, BASE + "/", KEY), options=options)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://upstream.test:8000/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "model": "qwen-plus",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "enable_thinking": False,
        "sim": {"scenario": "happy"},
    }


@pytest.mark.parametrize(
    ("stream", "include_usage"),
    [
        pytest.param(False, True, id="non-stream"),
        pytest.param(True, False, id="stream-without-usage"),
    ],
)
async def test_request_without_stream_options_or_key(
    closing: list[httpx.AsyncClient], stream: bool, include_usage: bool
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    http = mock_http(handler)
    closing.append(http)
    client = ChatClient(http, BASE, None, include_usage=include_usage, retries=0)
    await collect(client, stream=stream)
    (request,) = seen
    assert "authorization" not in request.headers
    body = json.loads(request.content)
    assert body == {"model": "qwen-plus", "messages": MESSAGES, "stream": stream}


async def test_options_cannot_override_core_fields(closing: list[httpx.AsyncClient]) -> None:
    http, _, _ = replay([])
    closing.append(http)
    with pytest.raises(ValueError, match="stream"):
        await collect(ChatClient(http, BASE), options={"stream": False})


# --------------------------------------------------------------------------------------------
# Non-streaming


async def test_non_streaming_success(closing: list[httpx.AsyncClient]) -> None:
    body = {
        "id": "chatcmpl-ns",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "我是通义千问。",
                    "reasoning_content": "用户问身份。",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 22, "completion_tokens": 8, "total_tokens": 30},
    }
    http, _, _ = replay(
        [json.dumps(body, ensure_ascii=False).encode()],
        headers={"content-type": "application/json"},
    )
    closing.append(http)
    events = await collect(ChatClient(http, BASE), stream=False)
    assert events == [
        ReasoningDelta("用户问身份。"),
        TextDelta("我是通义千问。"),
        Usage(22, 8, 30),
        Finished("stop", request_id="chatcmpl-ns"),
    ]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        pytest.param(b"<html>oops</html>", UpstreamProtocolError, id="not-json"),
        pytest.param(b"[1, 2]", UpstreamProtocolError, id="not-an-object"),
        pytest.param(b'{"choices": []}', UpstreamProtocolError, id="no-choices"),
        pytest.param(
            b'{"error": {"message": "Output data may contain inappropriate content.",'
            b' "code": "data_inspection_failed"}}',
            UpstreamStreamError,
            id="error-object-with-200",
        ),
    ],
)
async def test_non_streaming_bad_bodies(
    closing: list[httpx.AsyncClient], body: bytes, error_type: type[UpstreamError]
) -> None:
    http, _, _ = replay([body], headers={"content-type": "application/json"})
    closing.append(http)
    events = await collect(ChatClient(http, BASE), stream=False)
    assert len(events) == 1
    assert type(failure(events)) is error_type


# --------------------------------------------------------------------------------------------
# Cancellation and early close


async def test_cancellation_closes_upstream_response(closing: list[httpx.AsyncClient]) -> None:
    http, body, _ = replay([sse_line(delta_chunk("第一"))], hang=True)
    closing.append(http)
    client = ChatClient(http, BASE)
    got_text = asyncio.Event()
    events: list[Event] = []

    async def consume() -> None:
        async for event in client.stream_reply("qwen-plus", MESSAGES):
            events.append(event)
            got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 1.0)
    assert not body.closed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed
    assert events == [TextDelta("第一")]


async def test_consumer_stopping_early_closes_upstream_response(
    closing: list[httpx.AsyncClient],
) -> None:
    http, body, _ = replay([sse_line(delta_chunk("a")), sse_line(delta_chunk("b"))], hang=True)
    closing.append(http)
    async with aclosing(ChatClient(http, BASE).stream_reply("qwen-plus", MESSAGES)) as replies:
        async for event in replies:
            assert event == TextDelta("a")
            break
    assert body.closed


# --------------------------------------------------------------------------------------------
# The API key never leaks


async def test_api_key_never_in_errors_or_logs(
    closing: list[httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "code": "x"}})
    cases: list[tuple[int, dict[str, str], bytes]] = [
        (401, {"content-type": "application/json"}, echo.encode()),
        (403, {"content-type": "application/json"}, echo.encode()),
        (400, {"content-type": "application/json"}, echo.encode()),
        (500, {"content-type": "text/plain"}, f"bad key {KEY}".encode()),
        (200, SSE, b"data: " + echo.encode() + b"\n\n"),
    ]
    for status, headers, body in cases:
        http, _, _ = replay([body], status=status, headers=headers)
        closing.append(http)
        client = ChatClient(http, BASE, KEY, retry_backoff=0.01)  # retries are logged too
        assert KEY not in repr(client)
        error = failure(await collect(client))
        for rendering in (error.message, str(error), repr(error), repr(Failed(error))):
            assert KEY not in rendering, (status, rendering)
    port = closed_port()
    http = make_http_client(connect_timeout=2.0)
    closing.append(http)
    client = ChatClient(http, f"http://127.0.0.1:{port}/v1", KEY, retry_backoff=0.01)
    error = failure(await collect(client))
    assert KEY not in repr(error)
    assert KEY not in caplog.text


# --------------------------------------------------------------------------------------------
# parse_chunk / parse_completion (pure)


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        pytest.param(
            {"id": "c", "choices": [{"delta": {"content": "", "role": "assistant"}}]},
            [],
            id="role-only-first-chunk",
        ),
        pytest.param(
            {
                "id": "c",
                "choices": [{"delta": {"content": None, "reasoning_content": ""}}],
            },
            [],
            id="thinking-first-chunk",
        ),
        pytest.param(
            {"id": "c", "choices": [{"delta": {"content": None, "reasoning_content": None}}]},
            [],
            id="both-null",
        ),
        pytest.param(
            {
                "id": "c",
                "choices": [],
                "usage": {"prompt_tokens": 22, "completion_tokens": 17, "total_tokens": 39},
            },
            [Usage(22, 17, 39)],
            id="usage-chunk-empty-choices",
        ),
        pytest.param(
            {"id": "c", "choices": [{"delta": {"content": ""}, "finish_reason": "stop"}]},
            [Finished("stop", request_id="c")],
            id="finish-with-empty-content",
        ),
        pytest.param(
            {"id": "c", "choices": [{"delta": {"content": "end"}, "finish_reason": "length"}]},
            [TextDelta("end"), Finished("length", request_id="c")],
            id="content-and-finish-together",
        ),
        pytest.param(
            {"id": "c", "choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
            [Finished("tool_calls", request_id="c")],
            id="tool-calls-finish",
        ),
        pytest.param(
            {
                "choices": [
                    {
                        "delta": {
                            "content": [
                                {"type": "text", "text": "看"},
                                {"type": "image_url", "image_url": {"url": "x"}},
                                {"text": "图"},
                            ]
                        }
                    }
                ]
            },
            [TextDelta("看图")],
            id="content-parts-list",
        ),
        pytest.param(
            {"choices": [{"delta": {"reasoning": "hm"}}]},
            [ReasoningDelta("hm")],
            id="vllm-reasoning",
        ),
        pytest.param(
            {"choices": [{"delta": {"reasoning_text": "hm"}}]},
            [ReasoningDelta("hm")],
            id="reasoning-text",
        ),
        pytest.param(
            {"choices": [{"delta": {"reasoning": "hm", "reasoning_content": "hm"}}]},
            [ReasoningDelta("hm")],
            id="duplicate-reasoning-fields-once",
        ),
        pytest.param(
            {"choices": [{"delta": {"content": "x"}, "finish_reason": "null"}]},
            [TextDelta("x")],
            id="string-null-finish-reason",
        ),
        pytest.param({"choices": None, "usage": None}, [], id="null-choices-and-usage"),
        pytest.param(
            {"choices": [], "usage": {"prompt_tokens": None, "completion_tokens": None}},
            [],
            id="empty-usage",
        ),
        pytest.param(
            {"request_id": "r", "usage": {"input_tokens": 3, "output_tokens": 4}},
            [Usage(3, 4, None)],
            id="native-usage-names",
        ),
    ],
)
def test_parse_chunk(chunk: dict[str, Any], expected: list[Event]) -> None:
    assert parse_chunk(chunk) == expected


def test_parse_chunk_error_object() -> None:
    (event,) = parse_chunk(
        {"error": {"message": " Bad output. ", "code": "data_inspection_failed"}}
    )
    assert isinstance(event, Failed)
    assert isinstance(event.error, UpstreamStreamError)
    assert event.error.message == "Bad output. (data_inspection_failed)"


def test_parse_completion_missing_finish_reason_and_parts() -> None:
    events = parse_completion(
        {"id": "x", "choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}]}
    )
    assert events == [TextDelta("hi"), Finished("stop", request_id="x")]


def test_error_kinds_and_pickling() -> None:
    import pickle

    kinds = {
        cls.kind
        for cls in (
            UpstreamUnavailable,
            UpstreamTimeout,
            UpstreamAuthError,
            UpstreamRateLimited,
            UpstreamBadRequest,
            UpstreamServerError,
            UpstreamStreamError,
            UpstreamInterrupted,
            UpstreamProtocolError,
        )
    }
    assert kinds == {
        "unavailable",
        "timeout",
        "auth",
        "rate_limit",
        "bad_request",
        "server",
        "stream_error",
        "incomplete",
        "protocol",
    }
    error = UpstreamRateLimited("wait", status=429, retry_after=3.0, code="q", request_id="r")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.status, copy.retry_after, copy.code, copy.request_id) == (
        "wait",
        429,
        3.0,
        "q",
        "r",
    )
