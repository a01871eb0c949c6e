"""DashScope's native protocol through ``ChatClient(protocol="dashscope")``, from exact bytes.

The provider's own sample (tests/data/llm/dashscope_reference.sse, copied verbatim from the
Model Studio streaming page) is replayed whole, split at every byte and one byte at a time;
the other streams are written to the shapes in the protocol reference: cumulative text with
``incremental_output: false``, thinking, ``event:error`` behind HTTP 200, errors as bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from chat.llm import (
    ChatClient,
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    TextDelta,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamInterrupted,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
    Usage,
    parse_dashscope_response,
)
from tests.support.doubles import SSE, mock_http, pieces_replay, recording, replay
from tests.support.events import failure

BASE = "https://dashscope.test/api/v1"
URL = f"{BASE}/services/aigc/text-generation/generation"
KEY = "sk-native-Secret0123456789abcdef"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "你是谁?"},
]
REFERENCE_PIECES = [
    ("我是", 1), ("通", 2), ("义", 3), ("千问,由阿里", 8), ("云开发的AI助手。我被", 16),
    ("设计用来回答各种问题、提供信息", 24), ("和与用户进行对话。有什么我可以", 32),
    ("帮助你的吗?", 36),
]  # fmt: skip
REFERENCE_EVENTS: list[Event] = [
    e
    for text, out in REFERENCE_PIECES
    for e in (
        TextDelta(text),
        Usage(prompt_tokens=22, completion_tokens=out, total_tokens=22 + out),
    )
] + [Finished("stop", request_id="xxx")]


def event(n: int, payload: dict[str, Any], kind: str = "result", status: int = 200) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id:{n}\nevent:{kind}\n:HTTP_STATUS/{status}\ndata:{data}\n\n".encode()


def result(
    content: str = "",
    reasoning: str | None = None,
    finish: str = "null",
    out: int = 1,
    request_id: str = "req-1",
) -> dict[str, Any]:
    message: dict[str, Any] = {"content": content, "role": "assistant"}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "output": {"choices": [{"message": message, "finish_reason": finish}]},
        "usage": {"total_tokens": 10 + out, "output_tokens": out, "input_tokens": 10},
        "request_id": request_id,
    }


def stream_of(payloads: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(event(i, p) for i, p in enumerate(payloads, 1))


async def collect(client: ChatClient, **kwargs: Any) -> list[Event]:
    return [e async for e in client.stream_reply("qwen-plus", MESSAGES, **kwargs)]


def texts(events: Iterable[Event], kind: type[TextDelta] | type[ReasoningDelta]) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


# --- The provider's sample -----------------------------------------------------------------


async def test_reference_sample_verbatim(closing: list[httpx.AsyncClient]) -> None:
    http, body, seen = replay([recording("dashscope_reference.sse")])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, KEY, protocol="dashscope"))
    assert events == REFERENCE_EVENTS
    assert texts(events, TextDelta) == (
        "我是通义千问,由阿里云开发的AI助手。我被设计用来回答各种问题、提供信息和与用户进行对话。"
        "有什么我可以帮助你的吗?"
    )
    assert body.closed
    request = seen[0]
    assert str(request.url) == URL
    assert request.headers["x-dashscope-sse"] == "enable"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": "qwen-plus",
        "input": {"messages": MESSAGES},
        "parameters": {"result_format": "message", "incremental_output": True},
    }


async def test_reference_sample_split_at_every_byte_boundary(
    closing: list[httpx.AsyncClient],
) -> None:
    raw = recording("dashscope_reference.sse")
    http, pieces = pieces_replay()
    closing.append(http)
    client = ChatClient(http, BASE, KEY, protocol="dashscope")
    for i in range(1, len(raw)):
        pieces[:] = [raw[:i], raw[i:]]
        assert await collect(client) == REFERENCE_EVENTS, f"split at byte {i}"


async def test_reference_sample_one_byte_at_a_time(closing: list[httpx.AsyncClient]) -> None:
    raw = recording("dashscope_reference.sse")
    http, _, _ = replay([raw[i : i + 1] for i in range(len(raw))])
    closing.append(http)
    assert await collect(ChatClient(http, BASE, protocol="dashscope")) == REFERENCE_EVENTS


async def test_reference_sample_with_crlf_and_keepalives(closing: list[httpx.AsyncClient]) -> None:
    raw = recording("dashscope_reference.sse").replace(b"\n", b"\r\n")
    raw = raw.replace(b"event:result\r\n", b"event:result\r\n:keepalive\r\n")
    http, _, _ = replay([raw])
    closing.append(http)
    assert await collect(ChatClient(http, BASE, protocol="dashscope")) == REFERENCE_EVENTS


# --- Incremental modes -----------------------------------------------------------------------


async def test_non_incremental_output_becomes_deltas(closing: list[httpx.AsyncClient]) -> None:
    """``incremental_output: false``: each event holds the whole text; the relay sees deltas."""
    wholes = ["我爱", "我爱吃", "我爱吃苹果", "我爱吃苹果"]
    payloads = [
        result(w, finish="stop" if i == len(wholes) - 1 else "null", out=i + 1)
        for i, w in enumerate(wholes)
    ]
    http, _, seen = replay([stream_of(payloads)])
    closing.append(http)
    client = ChatClient(http, BASE, protocol="dashscope", incremental=False)
    events = await collect(client)
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("我爱"),
        TextDelta("吃"),
        TextDelta("苹果"),
    ]
    assert events[-1] == Finished("stop", request_id="req-1")
    assert json.loads(seen[0].content)["parameters"]["incremental_output"] is False


async def test_thinking_forces_incremental_output(closing: list[httpx.AsyncClient]) -> None:
    """DashScope: incremental_output must be true when enable_thinking is true."""
    http, _, seen = replay([stream_of([result("hi", finish="stop")])])
    closing.append(http)
    client = ChatClient(http, BASE, protocol="dashscope", incremental=False)
    await collect(client, options={"enable_thinking": True, "temperature": 0.3, "seed": 7})
    assert json.loads(seen[0].content)["parameters"] == {
        "result_format": "message",
        "incremental_output": True,
        "enable_thinking": True,
        "temperature": 0.3,
        "seed": 7,
    }


async def test_options_cannot_replace_the_parsers_fields(closing: list[httpx.AsyncClient]) -> None:
    http, _, seen = replay([b""])
    closing.append(http)
    client = ChatClient(http, BASE, protocol="dashscope")
    with pytest.raises(ValueError, match="incremental_output"):
        await collect(client, options={"incremental_output": False})
    assert seen == []


async def test_cumulative_thinking_then_answer(closing: list[httpx.AsyncClient]) -> None:
    payloads = [
        result("", "嗯", out=1),
        result("", "嗯,用户", out=2),
        result("你好", "嗯,用户", out=3),
        result("你好!", "嗯,用户", finish="stop", out=4),
    ]
    http, _, _ = replay([stream_of(payloads)])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope", incremental=False))
    deltas = [e for e in events if isinstance(e, TextDelta | ReasoningDelta)]
    assert deltas == [
        ReasoningDelta("嗯"),
        ReasoningDelta(",用户"),
        TextDelta("你好"),
        TextDelta("!"),
    ]


async def test_incremental_thinking_with_empty_inactive_fields(
    closing: list[httpx.AsyncClient],
) -> None:
    """Native thinking: the inactive field is "" (not null); both empty is "same phase"."""
    payloads = [
        result("", "Let me", out=1),
        result("", " think.", out=2),
        result("", "", out=2),
        result("Paris", "", out=3),
        result(".", "", finish="stop", out=4),
    ]
    http, _, _ = replay([stream_of(payloads)])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"))
    assert texts(events, ReasoningDelta) == "Let me think."
    assert texts(events, TextDelta) == "Paris."
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(not isinstance(e, ReasoningDelta) for e in events[first_text:])
    usages = [e for e in events if isinstance(e, Usage)]
    assert [u.completion_tokens for u in usages] == [1, 2, 3, 4]  # a repeat is not re-sent


async def test_text_result_format(closing: list[httpx.AsyncClient]) -> None:
    payloads = [
        {"output": {"finish_reason": "null", "text": "最近"}, "usage": {"output_tokens": 3}},
        {"output": {"finish_reason": "stop", "text": "的公园"}, "request_id": "t-1"},
    ]
    http, _, _ = replay([stream_of(payloads)])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"))
    assert texts(events, TextDelta) == "最近的公园"
    assert events[-1] == Finished("stop", request_id="t-1")


# --- Ends and errors ---------------------------------------------------------------------------


async def test_eof_before_the_finishing_event_is_interrupted(
    closing: list[httpx.AsyncClient],
) -> None:
    http, _, _ = replay([stream_of([result("半句", out=1)])])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"))
    assert texts(events, TextDelta) == "半句"
    assert isinstance(failure(events), UpstreamInterrupted)


async def test_moderation_error_event_after_text_keeps_the_text(
    closing: list[httpx.AsyncClient],
) -> None:
    error = {
        "code": "DataInspectionFailed",
        "message": "Output data may contain inappropriate content.",
        "request_id": "mod-1",
    }
    raw = stream_of([result("Some", out=1)]) + event(2, error, kind="error", status=400)
    http, _, _ = replay([raw])
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"))
    assert texts(events, TextDelta) == "Some"
    problem = failure(events)
    assert isinstance(problem, UpstreamStreamError)
    assert problem.message == (
        "Output data may contain inappropriate content. (DataInspectionFailed)"
    )
    assert problem.request_id == "mod-1"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        pytest.param("Throttling.RateQuota", UpstreamRateLimited, id="throttling"),
        pytest.param("InvalidApiKey", UpstreamAuthError, id="key"),
        pytest.param("InternalError.Algo", UpstreamServerError, id="server"),
        pytest.param("InvalidParameter", UpstreamStreamError, id="other-code"),
    ],
)
async def test_error_event_behind_http_200_keeps_its_kind(
    closing: list[httpx.AsyncClient], code: str, kind: type[Exception]
) -> None:
    """qwen-code: "DashScope throttling: error opens with 200 OK, then an SSE error frame"."""
    error = {"code": code, "message": "Requests rate limit exceeded.", "request_id": "e-1"}
    http, _, _ = replay([event(1, error, kind="error", status=429)])
    closing.append(http)
    # One response's mapping; asking again after throttling is tested in test_llm_retries.
    events = await collect(ChatClient(http, BASE, KEY, protocol="dashscope", retries=0))
    problem = failure(events)
    assert type(problem) is kind
    assert problem.request_id == "e-1"
    assert KEY not in problem.message


async def test_native_error_bodies(closing: list[httpx.AsyncClient]) -> None:
    """Top-level code/message/request_id, as JSON or SSE-framed under a JSON content type."""
    bodies = {
        401: (b'{"code":"InvalidApiKey","message":"Invalid API-key provided.",'
              b'"request_id":"01415ff3"}', {"content-type": "application/json"}),
        400: (event(1, {"code": "InvalidParameter", "message": "Range of max_tokens should "
              "be [1, 32768]", "request_id": "f19e"}, kind="error", status=400),
              {"content-type": "application/json"}),
    }  # fmt: skip
    status_of = iter([401, 400])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(status_of)
        body, headers = bodies[status]
        return httpx.Response(status, headers=headers, content=body)

    http = mock_http(handler)
    closing.append(http)
    client = ChatClient(http, BASE, KEY, protocol="dashscope")
    auth = failure(await collect(client))
    assert isinstance(auth, UpstreamAuthError)
    assert (auth.code, auth.request_id) == ("InvalidApiKey", "01415ff3")
    bad = failure(await collect(client))
    assert isinstance(bad, UpstreamBadRequest)
    assert bad.message == (
        "The model server refused the request (HTTP 400): Range of max_tokens should be [1, 32768]"
    )
    assert bad.request_id == "f19e"


async def test_stream_only_400_says_to_turn_streaming_on(closing: list[httpx.AsyncClient]) -> None:
    body = (
        b'{"code":"InvalidParameter","message":"This model only support stream mode, please '
        b'enable the stream parameter to access the model.","request_id":"s-1"}'
    )
    http, _, seen = replay([body], status=400, headers={"content-type": "application/json"})
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"), stream=False)
    problem = failure(events)
    assert problem.message.startswith("This model only answers streaming requests")
    assert "x-dashscope-sse" not in seen[0].headers


# --- Non-streaming ---------------------------------------------------------------------------


async def test_non_streaming_native_body(closing: list[httpx.AsyncClient]) -> None:
    body = {
        "output": {
            "choices": [
                {
                    "message": {
                        "content": "我是通义千问。",
                        "reasoning_content": "用户问我是谁。",
                        "role": "assistant",
                    },
                    "finish_reason": "stop",
                }
            ]
        },
        "usage": {"input_tokens": 22, "output_tokens": 8, "total_tokens": 30},
        "request_id": "ns-1",
    }
    http, _, seen = replay(
        [json.dumps(body).encode()], headers={"content-type": "application/json"}
    )
    closing.append(http)
    events = await collect(ChatClient(http, BASE, protocol="dashscope"), stream=False)
    assert events == [
        ReasoningDelta("用户问我是谁。"),
        TextDelta("我是通义千问。"),
        Usage(22, 8, 30),
        Finished("stop", request_id="ns-1"),
    ]
    assert "incremental_output" not in json.loads(seen[0].content)["parameters"]


def test_parse_response_without_output_is_an_error() -> None:
    (only,) = parse_dashscope_response({"request_id": "x"})
    assert isinstance(only, Failed)


async def test_thinking_model_refusing_cumulative_output_is_asked_incrementally(
    closing: list[httpx.AsyncClient],
) -> None:
    """QwQ/Qwen3 refuse ``incremental_output: false``: ask again incrementally, and remember."""
    modes: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        incremental = json.loads(request.content)["parameters"]["incremental_output"]
        modes.append(incremental)
        if not incremental:
            refusal = {
                "code": "InvalidParameter",
                "message": "The incremental_output parameter of this model cannot be set to False.",
            }
            return httpx.Response(400, json=refusal)
        payloads = [result("", "Hmm.", out=1), result("Yes.", "", finish="stop", out=2)]
        return httpx.Response(200, headers=SSE, content=stream_of(payloads))

    http = mock_http(handler)
    closing.append(http)
    client = ChatClient(http, BASE, protocol="dashscope", incremental=False)
    for _ in range(2):
        events = await collect(client)
        assert texts(events, ReasoningDelta) == "Hmm." and texts(events, TextDelta) == "Yes."
    assert modes == [False, True, True]
