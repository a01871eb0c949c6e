"""The upstream simulator, driven for real over HTTP (``python -m simulator`` under Daphne).

The app's own tests trust the simulator to be byte-faithful to DashScope compatible mode, so
these tests check the wire shapes against the reference capture, and that every fault and the
request log behave as documented.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from simulator.app import DEFAULT_STREAM_ONLY_MODELS, make_app
from simulator.script import SimOptions, plan_answer, resolve_options
from tests.support.simulator import Simulator, running_simulator
from tests.support.upstream import chat_body, content_of, log_entry, sse_data, wait_for_outcome
from tests.support.waiting import throughout

# Served under Daphne by the simulator's own process: a live module (the in-process checks of
# plan_answer at the end are a few milliseconds).
pytestmark = pytest.mark.live

ROLE_CHUNK_PREFIX = (
    b'data: {"choices":[{"delta":{"content":"","role":"assistant"},"index":0,"logprobs":null,'
    b'"finish_reason":null}],"object":"chat.completion.chunk","usage":null,"created":'
)
STREAM_ONLY_MESSAGE = (
    "This model only support stream mode, please enable the stream parameter to access the model. "
)


def _plan(entry: dict[str, Any]) -> list[str]:
    return plan_answer(entry["model"], entry["messages"], SimOptions(**entry["options"]))


# --------------------------------------------------------------------------------------------
# Shape of a normal stream
# --------------------------------------------------------------------------------------------


async def test_banner_and_model_list(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    assert sim.banner == f"simulator listening on {sim.base}/v1"
    response = await sim_client.get(sim.base + "/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert {"id", "object", "created", "owned_by"} <= set(listing["data"][0])
    names = [model["id"] for model in listing["data"]]
    assert "qwen-plus" in names and "qwq-plus" in names


async def test_stream_shape_with_usage(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("Explain server-sent events.", tokens=30)
    body["stream_options"] = {"include_usage": True}
    response, data = await sse_data(sim_client, sim, body)

    assert response.headers["content-type"] == "text/event-stream;charset=UTF-8"
    assert response.headers["cache-control"] == "no-cache"
    assert data[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in data[:-1]]
    first, *content, finish, usage = chunks
    sim_id = first["id"]
    assert re.fullmatch(r"chatcmpl-[0-9a-f-]{36}", sim_id)
    assert sim_id.removeprefix("chatcmpl-") == response.headers["x-request-id"]
    assert first["choices"] == [
        {
            "delta": {"content": "", "role": "assistant"},
            "index": 0,
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "qwen-plus"
        assert chunk["id"] == sim_id
        assert chunk["system_fingerprint"] is None
        assert isinstance(chunk["created"], int)
    assert content
    for chunk in content:
        (choice,) = chunk["choices"]
        assert choice["finish_reason"] is None
        assert set(choice["delta"]) == {"content"} and choice["delta"]["content"]
        assert chunk["usage"] is None
    assert finish["choices"] == [
        {"finish_reason": "stop", "delta": {"content": ""}, "index": 0, "logprobs": None}
    ]
    assert finish["usage"] is None
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 30
    assert usage["usage"]["total_tokens"] == (
        usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )


async def test_stream_bytes_match_reference_layout(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    async with sim_client.stream(
        "POST", sim.chat_url, json=chat_body("Hi there", tokens=8)
    ) as response:
        raw = await response.aread()
    assert raw.startswith(ROLE_CHUNK_PREFIX)
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert all(event.startswith(b"data: ") and b"\n" not in event for event in events)
    # Compact separators; the top-level key order is the captured one.
    for event in events[:-1]:
        assert b'": ' not in event and b'", "' not in event
        keys = list(json.loads(event[6:]))
        assert keys == [
            "choices",
            "object",
            "usage",
            "created",
            "system_fingerprint",
            "model",
            "id",
        ]


async def test_stream_without_usage_has_no_usage_chunk(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    _, data = await sse_data(sim_client, sim, chat_body("No usage please", tokens=10))
    chunks = [json.loads(payload) for payload in data[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert data[-1] == "[DONE]"


async def test_text_matches_plan_and_log(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    _, data = await sse_data(sim_client, sim, chat_body("Compare polling and streaming", tokens=60))
    sim_id = json.loads(data[0])["id"]
    entry = await log_entry(sim_client, sim, sim_id)
    text = content_of(data)
    assert text == "".join(_plan(entry)) == entry["text"]
    assert entry["tokens_sent"] == 60
    assert entry["outcome"] == "complete"
    assert entry["stream"] is True and entry["include_usage"] is False
    assert entry["started_at"] <= entry["first_token_at"] <= entry["finished_at"]
    assert entry["disconnected_at"] is None
    listing = (await sim_client.get(sim.log_url)).json()["requests"]
    assert listing[-1]["sim_id"] == sim_id


async def test_same_seed_same_text_other_seed_differs(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    texts = []
    for seed in (7, 7, 8):
        _, data = await sse_data(
            sim_client, sim, chat_body("Tell me about caching", tokens=40, seed=seed)
        )
        texts.append(content_of(data))
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


async def test_body_seed_is_the_default_seed(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("Seeded by the body", tokens=20)
    body["seed"] = 42
    _, data = await sse_data(sim_client, sim, body)
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["options"]["seed"] == 42


async def test_chinese_prompt_gives_chinese_answer(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    _, data = await sse_data(sim_client, sim, chat_body("你是谁？", tokens=40))
    text = content_of(data)
    cjk = sum("\u4e00" <= char <= "\u9fff" for char in text)
    assert cjk > len(text) / 2
    # Raw UTF-8 on the wire, never \u escapes.
    assert all("\\u" not in payload for payload in data)
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["options"]["lang"] == "zh"
    chinese = [piece.strip() for piece in _plan(entry) if "\u4e00" <= piece[-1] <= "\u9fff"]
    assert chinese and all(1 <= len(piece) <= 4 for piece in chinese)


async def test_directive_overrides_body_and_is_not_prompt(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("What is backpressure?\n#sim tokens=12 seed=5", tokens=30, seed=1)
    _, data = await sse_data(sim_client, sim, body)
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["options"]["tokens"] == 12 and entry["options"]["seed"] == 5
    _, plain = await sse_data(
        sim_client, sim, chat_body("What is backpressure?", tokens=12, seed=5)
    )
    assert content_of(data) == content_of(plain)


# --------------------------------------------------------------------------------------------
# Non-streaming
# --------------------------------------------------------------------------------------------


async def test_non_streaming_json(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("Summarise the trade-offs", stream=False, tokens=25)
    response = await sim_client.post(sim.chat_url, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    obj = response.json()
    assert list(obj) == [
        "choices",
        "object",
        "usage",
        "created",
        "system_fingerprint",
        "model",
        "id",
    ]
    assert obj["object"] == "chat.completion"
    (choice,) = obj["choices"]
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    entry = await log_entry(sim_client, sim, obj["id"])
    assert choice["message"]["content"] == "".join(_plan(entry)) == entry["text"]
    assert obj["usage"]["completion_tokens"] == 25
    assert obj["usage"]["total_tokens"] == obj["usage"]["prompt_tokens"] + 25
    assert entry["stream"] is False and entry["outcome"] == "complete"


async def test_max_tokens_truncates_with_length(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("Long answer please", tokens=50)
    body["max_tokens"] = 10
    body["stream_options"] = {"include_usage": True}
    _, data = await sse_data(sim_client, sim, body)
    chunks = [json.loads(payload) for payload in data[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    entry = await log_entry(sim_client, sim, chunks[0]["id"])
    assert content_of(data) == "".join(_plan(entry)[:10])


# --------------------------------------------------------------------------------------------
# Errors and faults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        pytest.param("401", 401, "invalid_api_key", id="401"),
        pytest.param("403", 403, "access_denied", id="403"),
        pytest.param("429", 429, "limit_requests", id="429"),
        pytest.param("400", 400, "invalid_parameter_error", id="400"),
        pytest.param("500", 500, "internal_error", id="500"),
        pytest.param("503", 503, "ModelUnavailable", id="503"),
    ],
)
async def test_http_faults(
    sim: Simulator, sim_client: httpx.AsyncClient, fault: str, status: int, code: str
) -> None:
    response = await sim_client.post(sim.chat_url, json=chat_body("fail please", fault=fault))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error", "request_id"]
    assert body["error"]["code"] == code
    assert body["error"]["param"] is None
    assert "retry-after" not in response.headers
    entry = (await sim_client.get(sim.log_url)).json()["requests"][-1]
    assert entry["outcome"] == f"fault:{fault}"
    assert entry["sim_id"] == f"chatcmpl-{body['request_id']}"


async def test_429_retry_after_header(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    response = await sim_client.post(sim.chat_url, json=chat_body("x", fault="429", retry_after=3))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


async def test_exact_401_body(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    response = await sim_client.post(sim.chat_url, json=chat_body("x", fault="401"))
    request_id = response.json()["request_id"]
    assert (
        response.content
        == (
            '{"error":{"message":"Incorrect API key provided. For details, see: '
            'https://help.aliyun.com/zh/model-studio/error-code#apikey-error",'
            '"type":"invalid_request_error","param":null,"code":"invalid_api_key"},'
            f'"request_id":"{request_id}"}}'
        ).encode()
    )


@pytest.mark.parametrize(
    "model", ["qwq-plus", "QwQ-32B", "qwen3-235b-a22b", "qwen3-235b-a22b-thinking-2507"]
)
async def test_stream_only_model_rejects_stream_false(
    sim: Simulator, sim_client: httpx.AsyncClient, model: str
) -> None:
    response = await sim_client.post(
        sim.chat_url, json=chat_body("no stream", stream=False, model=model, tokens=5)
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    request_id = response.json()["request_id"]
    assert response.headers["x-request-id"] == request_id
    assert (
        response.content
        == (
            '{"error":{"message":"' + STREAM_ONLY_MESSAGE + '","type":"invalid_request_error",'
            '"param":null,"code":"invalid_parameter_error"},'
            f'"id":"chatcmpl-{request_id}","request_id":"{request_id}"}}'
        ).encode()
    )
    entry = await log_entry(sim_client, sim, f"chatcmpl-{request_id}")
    assert entry["outcome"] == "rejected:400" and entry["status"] == 400
    assert entry["model"] == model and entry["stream"] is False
    assert entry["tokens_sent"] == 0 and entry["text"] == ""


async def test_stream_only_model_rejects_missing_stream_flag(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("stream omitted", model="qwq-plus", tokens=5)
    del body["stream"]
    response = await sim_client.post(sim.chat_url, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == STREAM_ONLY_MESSAGE


async def test_stream_only_model_streams_normally(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("Explain streaming", model="qwq-plus", tokens=20)
    body["stream_options"] = {"include_usage": True}
    response, data = await sse_data(sim_client, sim, body)
    assert response.status_code == 200
    assert data[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in data[:-1]]
    assert all(chunk["model"] == "qwq-plus" for chunk in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # qwq-plus also thinks by default: completion_tokens counts the reasoning too.
    usage = chunks[-1]["usage"]
    reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
    assert usage["completion_tokens_details"]["text_tokens"] == 20
    assert usage["completion_tokens"] == 20 + reasoning_tokens
    entry = await log_entry(sim_client, sim, chunks[0]["id"])
    assert entry["outcome"] == "complete" and entry["stream"] is True
    assert entry["reasoning_tokens_sent"] == reasoning_tokens > 0
    assert content_of(data) == "".join(_plan(entry)) == entry["text"]


async def test_stream_only_patterns_from_env(sim_client: httpx.AsyncClient) -> None:
    patterns = {"SIM_STREAM_ONLY_MODELS": "custom-*, *-stream-only"}
    with running_simulator(env=patterns) as custom:
        for model in ("custom-model", "big-stream-only"):
            body = chat_body("no stream", stream=False, model=model, tokens=5)
            response = await sim_client.post(custom.chat_url, json=body)
            assert response.status_code == 400, model
            assert response.json()["error"]["message"] == STREAM_ONLY_MESSAGE
            _, data = await sse_data(sim_client, custom, {**body, "stream": True})
            assert data[-1] == "[DONE]"
        # The custom list replaces the defaults.
        for model in ("qwq-plus", "qwen-plus"):
            body = chat_body("plain", stream=False, model=model, tokens=5)
            response = await sim_client.post(custom.chat_url, json=body)
            assert response.status_code == 200, model
            assert response.json()["object"] == "chat.completion"
        log = (await sim_client.get(custom.log_url)).json()["requests"]
        outcomes = [entry["outcome"] for entry in log]
        assert outcomes == ["rejected:400", "complete"] * 2 + ["complete"] * 2


def test_stream_only_keyword_and_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_STREAM_ONLY_MODELS", raising=False)
    assert make_app().stream_only_models == list(DEFAULT_STREAM_ONLY_MODELS)
    monkeypatch.setenv("SIM_STREAM_ONLY_MODELS", "")
    assert not make_app().is_stream_only("qwq-plus")
    monkeypatch.setenv("SIM_STREAM_ONLY_MODELS", "from-env*")
    assert make_app().is_stream_only("from-env-1")
    app = make_app(stream_only_models=["Deep*"])
    assert app.is_stream_only("deepseek-r1") and not app.is_stream_only("from-env-1")
    assert make_app(stream_only_models="a*, b*").stream_only_models == ["a*", "b*"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param(b"{not json", "Required body invalid", id="malformed-json"),
        pytest.param(
            json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}
            ).encode(),
            "Range of max_tokens should be [1, 8192]",
            id="max-tokens-range",
        ),
        pytest.param(
            json.dumps({"model": "m", "messages": []}).encode(), "messages", id="no-messages"
        ),
        pytest.param(
            json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "sim": {"bogus": 1}}
            ).encode(),
            "unknown sim option",
            id="unknown-option",
        ),
    ],
)
async def test_bad_requests_get_400(
    sim: Simulator, sim_client: httpx.AsyncClient, content: bytes, needle: str
) -> None:
    response = await sim_client.post(
        sim.chat_url, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter_error"
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


async def test_eof_fault_ends_without_finish_or_done(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("cut me off", tokens=40, fault="eof", fault_after=6)
    body["stream_options"] = {"include_usage": True}
    _, data = await sse_data(sim_client, sim, body)
    assert "[DONE]" not in data
    chunks = [json.loads(payload) for payload in data]
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)
    entry = await log_entry(sim_client, sim, chunks[0]["id"])
    assert entry["outcome"] == "fault:eof"
    assert entry["tokens_sent"] == 6
    assert content_of(data) == "".join(_plan(entry)[:6]) == entry["text"]


async def test_midstream_error_fault(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    _, data = await sse_data(
        sim_client, sim, chat_body("moderate me", tokens=40, fault="midstream_error")
    )
    assert "[DONE]" not in data
    assert data[-1] == (
        '{"error":{"message":"Output data may contain inappropriate content.",'
        '"type":"data_inspection_failed","param":null,"code":"data_inspection_failed"}}'
    )
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["tokens_sent"] == 5
    assert entry["outcome"] == "fault:midstream_error"


async def test_fault_times_fails_only_the_first_requests_of_a_message(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("fail twice, then answer", tokens=5, fault="503", fault_times=2)
    statuses = []
    for _ in range(3):
        response = await sim_client.post(sim.chat_url, json=body)
        statuses.append(response.status_code)
    assert statuses == [503, 503, 200]
    other = await sim_client.post(
        sim.chat_url, json=chat_body("another message", fault="503", fault_times=2)
    )
    assert other.status_code == 503  # counted per message
    entries = (await sim_client.get(sim.log_url)).json()["requests"][-4:]
    assert [e["attempt"] for e in entries] == [1, 2, 3, 1]
    assert [e["outcome"] for e in entries[:3]] == ["fault:503", "fault:503", "complete"]
    assert entries[2]["options"]["fault"] is None
    # DELETE of the log resets the counts too.
    await sim_client.delete(sim.log_url)
    assert (await sim_client.post(sim.chat_url, json=body)).status_code == 503


async def test_midstream_error_kind(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("throttle me late", tokens=40, fault="midstream_error", midstream_kind="429")
    _, data = await sse_data(sim_client, sim, body)
    assert json.loads(data[-1])["error"]["code"] == "limit_requests"
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["tokens_sent"] == 5


async def test_stall_with_keepalive_pings_until_client_leaves(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("stall pinging", tokens=40, fault="stall", fault_after=3, keepalive=1)
    raw = b""
    with contextlib.suppress(httpx.ReadTimeout):
        async with sim_client.stream(
            "POST", sim.chat_url, json=body, timeout=httpx.Timeout(5.0, read=0.5)
        ) as response:
            started = time.monotonic()
            async for piece in response.aiter_raw():
                raw += piece
                if time.monotonic() - started > 1.0:
                    break
    # An idle timeout of 0.5 s never fired: pings kept coming after the 3 tokens.
    assert raw.rstrip().endswith(b": keep-alive")
    assert raw.count(b": keep-alive\n\n") >= 5
    assert b"[DONE]" not in raw


async def test_stall_holds_until_client_leaves(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("stall", tokens=40, fault="stall", fault_after=3)
    received: list[str] = []
    with pytest.raises(httpx.ReadTimeout):
        async with aconnect_sse(
            sim_client, "POST", sim.chat_url, json=body, timeout=httpx.Timeout(5.0, read=0.5)
        ) as source:
            async for event in source.aiter_sse():
                received.append(event.data)
    assert len(received) >= 2  # role chunk + at least one content chunk
    entry = await wait_for_outcome(sim_client, sim, json.loads(received[0])["id"], "disconnected")
    assert entry["tokens_sent"] == 3
    assert entry["options"]["fault"] == "stall"


async def test_slow_headers_delay_response_start(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("slow", tokens=5, fault="slow_headers", delay=0.4)
    with pytest.raises(httpx.ReadTimeout):
        await sim_client.post(sim.chat_url, json=body, timeout=httpx.Timeout(5.0, read=0.15))
    started = time.monotonic()
    body["sim"]["delay"] = 0.2
    _, data = await sse_data(sim_client, sim, body)
    assert time.monotonic() - started >= 0.2
    assert data[-1] == "[DONE]"


# --------------------------------------------------------------------------------------------
# Wire robustness options
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"fragment": 1}, id="fragment"),
        pytest.param({"crlf": 1}, id="crlf"),
        pytest.param({"weird": 1}, id="weird"),
        pytest.param({"shuffle": 1}, id="shuffle"),
        pytest.param({"keepalive": 1}, id="keepalive"),
        pytest.param({"fragment": 1, "crlf": 1, "weird": 1, "keepalive": 1}, id="all"),
    ],
)
async def test_wire_options_still_parse_to_plan(
    sim: Simulator, sim_client: httpx.AsyncClient, options: dict[str, int]
) -> None:
    body = chat_body("多字节的中文回答 with some English", tokens=60, lang="zh", **options)
    _, data = await sse_data(sim_client, sim, body)
    assert data[-1] == "[DONE]"
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    text = content_of(data)
    assert text == "".join(_plan(entry)) == entry["text"]
    if options.get("weird"):
        assert "\u2028" in text and "\u0085" in text


async def test_fragment_splits_inside_utf8_characters(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("请用中文回答", tokens=30, fragment=1, crlf=1)
    async with sim_client.stream("POST", sim.chat_url, json=body) as response:
        pieces = [piece async for piece in response.aiter_raw()]
    raw = b"".join(pieces)
    assert raw.startswith(ROLE_CHUNK_PREFIX.replace(b"\n", b"\r\n"))
    assert raw.endswith(b"\r\n\r\ndata: [DONE]\r\n\r\n")
    assert len(pieces) > raw.count(b"data: ")
    undecodable = 0
    for piece in pieces:
        try:
            piece.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable > 0


async def test_keepalive_comments_while_waiting(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("ping me", tokens=5, ttft=0.35, keepalive=1)
    async with sim_client.stream("POST", sim.chat_url, json=body) as response:
        raw = await response.aread()
    before_content = raw.split(b'"delta":{"content":"', 2)[1]
    assert raw.count(b": keep-alive\n\n", 0, len(raw) - len(before_content)) >= 2


async def test_stamp_prefixes_send_time(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    _, data = await sse_data(sim_client, sim, chat_body("stamp it", tokens=10, tps=200, stamp=1))
    received = time.time()
    stamps = []
    for payload in data[1:-2]:
        text = json.loads(payload)["choices"][0]["delta"]["content"]
        match = re.match(r"⟦(\d+\.\d{6})⟧", text)
        assert match, text
        stamps.append(float(match.group(1)))
    assert stamps == sorted(stamps)
    assert received - 5 < stamps[0] <= received


async def test_tokens_due_together_are_coalesced(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    # Everything is due at once: chunks carry several tokens, like "云的超大规模语言".
    _, burst = await sse_data(sim_client, sim, chat_body("burst", tokens=60, tps=1e6))
    assert len(burst) - 3 < 60
    # coalesce=1 keeps one token per chunk however far behind the sender is.
    _, single = await sse_data(sim_client, sim, chat_body("burst", tokens=60, tps=1e6, coalesce=1))
    assert len(single) - 3 == 60
    assert content_of(burst) == content_of(single)


# --------------------------------------------------------------------------------------------
# Timing and cancellation
# --------------------------------------------------------------------------------------------


async def _timed_stream(
    sim_client: httpx.AsyncClient, sim: Simulator, body: dict[str, Any]
) -> tuple[float, float, float]:
    """Seconds from request to the role chunk, to first content, and to the finish chunk."""
    start = time.monotonic()
    marks: list[float] = []
    async with aconnect_sse(sim_client, "POST", sim.chat_url, json=body) as source:
        async for _event in source.aiter_sse():
            marks.append(time.monotonic() - start)
    return marks[0], marks[1], marks[-2]


async def test_ttft_and_tps_are_honoured(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    role, first, _ = await _timed_stream(sim_client, sim, chat_body("ttft", tokens=3, ttft=0.3))
    assert role < first
    assert first >= 0.28
    assert first - role >= 0.25

    _, slow_first, slow_end = await _timed_stream(
        sim_client, sim, chat_body("tps", tokens=30, tps=100)
    )
    _, fast_first, fast_end = await _timed_stream(
        sim_client, sim, chat_body("tps", tokens=30, tps=3000)
    )
    slow = slow_end - slow_first
    fast = fast_end - fast_first
    assert slow >= 0.2  # 29 intervals at 100 tokens/s is 0.29 s
    assert fast < slow / 2


async def test_client_disconnect_is_recorded(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("a long answer to abandon", tokens=400, tps=40)
    seen = 0
    async with aconnect_sse(sim_client, "POST", sim.chat_url, json=body) as source:
        async for event in source.aiter_sse():
            sim_id = json.loads(event.data)["id"]
            seen += 1
            if seen == 4:
                break
    closed_at = time.time()
    # Noticed at once: the answer had 10 s to go; 2 s leaves a loaded machine room to get to
    # the simulator's event loop (the log says when it noticed, not when we looked).
    entry = await wait_for_outcome(sim_client, sim, sim_id, "disconnected", within=2.0)
    assert entry["disconnected_at"] - closed_at < 2.0
    assert 3 <= entry["tokens_sent"] < 400

    async def sent_no_more() -> bool:
        later = await log_entry(sim_client, sim, sim_id)
        return bool(later["tokens_sent"] == entry["tokens_sent"])

    # And it stopped generating: nothing more for as long as a dozen more tokens would take.
    await throughout(sent_no_more, "tokens were sent after the disconnect", during=0.3)
    later = await log_entry(sim_client, sim, sim_id)
    assert later["text"] == "".join(_plan(later)[: later["tokens_sent"]])


# --------------------------------------------------------------------------------------------
# Auth, prefix, routing
# --------------------------------------------------------------------------------------------


async def test_api_key_and_prefix(keyed_sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("auth", tokens=5)
    for headers in ({}, {"authorization": "Bearer sk-wrong"}):
        response = await sim_client.post(keyed_sim.chat_url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    ok = await sim_client.post(
        keyed_sim.chat_url, json=body, headers={"authorization": "Bearer sk-test"}
    )
    assert ok.status_code == 200
    models = await sim_client.get(keyed_sim.base + "/v1/models")
    assert models.status_code == 401
    unprefixed = keyed_sim.base.removesuffix("/simulator") + "/v1/chat/completions"
    missing = await sim_client.post(unprefixed, json=body)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    log = (await sim_client.get(keyed_sim.log_url)).json()["requests"]
    assert [entry["outcome"] for entry in log] == ["rejected:401", "rejected:401", "complete"]


async def test_unknown_route_is_json_404(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    response = await sim_client.get(sim.base + "/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
    assert (await sim_client.get(sim.log_url + "/chatcmpl-missing")).status_code == 404


async def test_lifespan_completes() -> None:
    app = make_app()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await asyncio.wait_for(app({"type": "lifespan"}, inbox.get, send), timeout=2)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --------------------------------------------------------------------------------------------
# plan_answer, in process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 2, 5, 13, 40, 150, 400, 900])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_plan_has_exact_length_and_balanced_markdown(tokens: int, lang: str) -> None:
    messages = [{"role": "user", "content": "Explain streaming responses"}]
    opts = resolve_options("qwen-plus", messages, body_sim={"tokens": tokens, "lang": lang})
    pieces = plan_answer("qwen-plus", messages, opts)
    assert len(pieces) == tokens
    assert all(pieces)
    text = "".join(pieces)
    assert text.count("```") % 2 == 0
    assert text.rstrip()[-1] in ".。"
    if tokens >= 400:
        assert re.search(r"^#{2,3} ", text, re.MULTILINE)
        assert re.search(r"^- ", text, re.MULTILINE)
    assert plan_answer("qwen-plus", messages, opts) == pieces


def test_defaults_are_deterministic_and_in_range() -> None:
    messages = [{"role": "user", "content": "hello"}]
    first = resolve_options("qwen-plus", messages)
    assert first == resolve_options("qwen-plus", messages)
    assert 0.3 <= first.ttft <= 0.5
    assert 30 <= first.tps <= 50
    assert 150 <= first.tokens <= 400
    assert first.lang == "en" and first.seed == 0
    overridden = resolve_options("qwen-plus", messages, defaults={"tps": 99}, body_sim={"tps": 12})
    assert overridden.tps == 12 and overridden.ttft == first.ttft


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [
        ("Write a detailed essay (about 800 words) on rivers.", 1067),
        ("请写一篇约800字的文章。", 800),
        ("A 300-word summary, please.", 400),
        ("Write 99999 words.", 4096),
    ],
)
def test_a_prompt_asking_for_a_length_gets_about_that_many_tokens(prompt: str, tokens: int) -> None:
    """As a model writes what is asked: the long-essay preset runs long enough for a gateway's
    idle timeout to cut its unstreamed twin. A directive still wins."""
    messages = [{"role": "user", "content": prompt}]
    assert resolve_options("qwen-plus", messages).tokens == tokens
    told = [{"role": "user", "content": prompt + "\n#sim tokens=20"}]
    assert resolve_options("qwen-plus", told).tokens == 20
