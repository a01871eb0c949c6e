"""The simulator's DashScope native protocol and thinking, driven for real over HTTP.

The native stream is parsed here from raw bytes (``id:``/``event:``/``:HTTP_STATUS/200``/``data:``
with no space after the colons and no ``[DONE]``), not with an SSE library, so the tests check the
exact framing of the reference capture rather than what a lenient parser accepts. Thinking is
checked on both protocols: compatible mode's ``null`` inactive field against native's ``""``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from simulator.app import DEFAULT_THINKING_MODELS, make_app
from simulator.script import (
    SimOptionError,
    SimOptions,
    parse_options,
    plan_answer,
    plan_reasoning,
    resolve_options,
)
from tests.support.simulator import Simulator, running_simulator
from tests.support.upstream import (
    FAST,
    chat_body,
    content_of,
    log_entry,
    sse_data,
    wait_for_outcome,
)
from tests.support.waiting import throughout

NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
SSE = {"X-DashScope-SSE": "enable"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# Served under Daphne by the simulator's own process: a live module.
pytestmark = pytest.mark.live


def _native_url(sim: Simulator) -> str:
    return sim.base + NATIVE_PATH


def _native_body(
    prompt: str,
    *,
    model: str = "qwen-plus",
    incremental: bool | None = True,
    result_format: str | None = "message",
    parameters: dict[str, Any] | None = None,
    **sim: Any,
) -> dict[str, Any]:
    """A native body with the same messages as ``chat_body`` so both protocols plan the same
    text."""
    params: dict[str, Any] = {"sim": {**FAST, **sim}}
    if incremental is not None:
        params["incremental_output"] = incremental
    if result_format is not None:
        params["result_format"] = result_format
    params.update(parameters or {})
    return {
        "model": model,
        "input": {"messages": [SYSTEM, {"role": "user", "content": prompt}]},
        "parameters": params,
    }


@dataclass
class Event:
    """One native SSE event as parsed from the raw bytes."""

    id: str | None = None
    event: str | None = None
    comments: list[str] = field(default_factory=list)
    data: str = ""

    @property
    def obj(self) -> dict[str, Any]:
        return dict(json.loads(self.data))

    @property
    def status(self) -> str | None:
        """The ``:HTTP_STATUS/NNN`` comment's number."""
        for comment in self.comments:
            if comment.startswith("HTTP_STATUS/"):
                return comment.removeprefix("HTTP_STATUS/")
        return None


def parse_native(raw: bytes) -> list[Event]:
    """Split on CR, LF and CRLF only (never ``str.splitlines``: content may hold U+2028)."""
    events: list[Event] = []
    current = Event()
    touched = False
    for line in re.split(r"\r\n|\r|\n", raw.decode()):
        if not line:
            if current.data or current.id or current.event:
                events.append(current)
            current, touched = Event(), False
            continue
        touched = True
        if line.startswith(":"):
            current.comments.append(line[1:])
            continue
        key, _, value = line.partition(":")
        if key == "id":
            current.id = value
        elif key == "event":
            current.event = value
        elif key == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
    assert not touched or not current.data, "the stream ended inside an event"
    return events


async def _native_raw(
    sim_client: httpx.AsyncClient, sim: Simulator, body: dict[str, Any], *, sse: bool = True
) -> tuple[httpx.Response, bytes]:
    async with sim_client.stream(
        "POST", _native_url(sim), json=body, headers=SSE if sse else {}
    ) as response:
        raw = await response.aread()
    return response, raw


def _message(event: Event) -> dict[str, Any]:
    (choice,) = event.obj["output"]["choices"]
    return dict(choice["message"])


def _finish(event: Event) -> str:
    output = event.obj["output"]
    if "choices" in output:
        return str(output["choices"][0]["finish_reason"])
    return str(output["finish_reason"])


def _plans(entry: dict[str, Any]) -> tuple[list[str], list[str]]:
    opts = SimOptions(**entry["options"])
    return (
        plan_reasoning(entry["model"], entry["messages"], opts),
        plan_answer(entry["model"], entry["messages"], opts),
    )


# --------------------------------------------------------------------------------------------
# Native streaming
# --------------------------------------------------------------------------------------------


async def test_native_incremental_events(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    prompt = "Explain native streaming"
    response, raw = await _native_raw(sim_client, sim, _native_body(prompt, tokens=40, seed=3))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream;charset=UTF-8"
    assert b"[DONE]" not in raw
    assert raw.endswith(b"}\n\n")
    blocks = raw.split(b"\n\n")[:-1]
    request_id = response.headers["x-request-id"]
    for number, block in enumerate(blocks, start=1):
        # Byte for byte the reference layout: no spaces after the colons, four lines.
        head = f"id:{number}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
        assert block.startswith(head), block
        assert block.count(b"\n") == 3
        payload = block[len(head) :]
        assert b'": ' not in payload and b'", "' not in payload
        obj = json.loads(payload)
        assert list(obj) == ["output", "usage", "request_id"]
        assert obj["request_id"] == request_id
        assert list(obj["usage"]) == ["total_tokens", "input_tokens", "output_tokens"]
        (choice,) = obj["output"]["choices"]
        assert list(choice) == ["message", "finish_reason"]
        assert list(choice["message"]) == ["content", "role"]
    events = parse_native(raw)
    assert len(events) == len(blocks)
    finishes = [_finish(event) for event in events]
    assert finishes[:-1] == ["null"] * (len(events) - 1)  # the string, never JSON null
    assert finishes[-1] == "stop"
    outputs = [event.obj["usage"]["output_tokens"] for event in events]
    assert outputs == sorted(outputs) and outputs[-1] == 40
    assert len(set(outputs)) == len(outputs)  # cumulative: strictly growing with each delta
    for event in events:
        usage = event.obj["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    native_text = "".join(_message(event)["content"] for event in events)
    assert all(_message(event)["content"] for event in events)  # the last carries text too

    # The same model, messages and seed give the same answer on the compatible route.
    _, data = await sse_data(sim_client, sim, chat_body(prompt, tokens=40, seed=3))
    assert native_text == content_of(data)

    entry = await log_entry(sim_client, sim, request_id)
    assert entry["protocol"] == "dashscope" and entry["incremental"] is True
    assert entry["result_format"] == "message" and entry["stream"] is True
    assert entry["request_id"] == entry["sim_id"] == request_id
    assert entry["text"] == native_text == "".join(_plans(entry)[1])
    assert entry["tokens_sent"] == 40 and entry["outcome"] == "complete"
    assert entry["reasoning"] == "" and entry["reasoning_tokens_sent"] == 0
    assert entry["started_at"] <= entry["first_token_at"] <= entry["finished_at"]
    compatible = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert compatible["protocol"] == "openai" and compatible["incremental"] is None


@pytest.mark.parametrize("result_format", ["message", "text"])
async def test_native_non_incremental_repeats_the_text_so_far(
    sim: Simulator, sim_client: httpx.AsyncClient, result_format: str
) -> None:
    body = _native_body(
        "Cumulative please", tokens=30, seed=4, incremental=False, result_format=result_format
    )
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    if result_format == "text":
        texts = [event.obj["output"]["text"] for event in events]
        assert all(list(event.obj["output"]) == ["finish_reason", "text"] for event in events)
    else:
        texts = [_message(event)["content"] for event in events]
    assert len(events) > 1
    for before, after in zip(texts, texts[1:], strict=False):
        assert after.startswith(before) and len(after) > len(before)
    assert [_finish(event) for event in events][-1] == "stop"
    _, data = await sse_data(sim_client, sim, chat_body("Cumulative please", tokens=30, seed=4))
    assert texts[-1] == content_of(data)
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    assert entry["incremental"] is False and entry["result_format"] == result_format
    assert entry["text"] == texts[-1]


async def test_native_defaults_are_text_format_and_cumulative(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """Without parameters the reference's defaults apply: text format, not incremental."""
    body = _native_body("Defaults", tokens=12, incremental=None, result_format=None)
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    texts = [event.obj["output"]["text"] for event in events]
    assert texts[-1].startswith(texts[0]) and len(texts[-1]) > len(texts[0])
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    assert entry["incremental"] is False and entry["result_format"] == "text"


async def test_native_max_tokens_ends_with_length(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = _native_body("Long answer please", tokens=50, parameters={"max_tokens": 10})
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    assert _finish(events[-1]) == "length"
    assert events[-1].obj["usage"]["output_tokens"] == 10
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    text = "".join(_message(event)["content"] for event in events)
    assert text == "".join(_plans(entry)[1][:10]) == entry["text"]


async def test_native_final_empty_event(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    _, raw = await _native_raw(sim_client, sim, _native_body("Empty end", tokens=8, final_empty=1))
    events = parse_native(raw)
    assert _message(events[-1])["content"] == ""
    assert [_finish(event) for event in events] == ["null"] * (len(events) - 1) + ["stop"]
    assert events[-1].obj["usage"]["output_tokens"] == events[-2].obj["usage"]["output_tokens"]


async def test_native_directive_and_top_level_sim(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """``sim`` may also be top-level; a ``#sim`` line wins and is not part of the prompt."""
    body = _native_body("What is backpressure?\n#sim tokens=12 seed=5", tokens=30, seed=1)
    body["sim"] = body["parameters"].pop("sim")
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    assert entry["options"]["tokens"] == 12 and entry["options"]["seed"] == 5
    _, plain = await sse_data(
        sim_client, sim, chat_body("What is backpressure?", tokens=12, seed=5)
    )
    assert "".join(_message(event)["content"] for event in events) == content_of(plain)


# --------------------------------------------------------------------------------------------
# Native without SSE
# --------------------------------------------------------------------------------------------


async def test_native_non_sse_json(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    response, raw = await _native_raw(
        sim_client, sim, _native_body("One body", tokens=25), sse=False
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    obj = json.loads(raw)
    assert list(obj) == ["output", "usage", "request_id"]
    assert obj["output"]["choices"][0]["finish_reason"] == "stop"
    message = obj["output"]["choices"][0]["message"]
    assert list(message) == ["content", "role"] and message["role"] == "assistant"
    assert obj["usage"]["output_tokens"] == 25
    entry = await log_entry(sim_client, sim, obj["request_id"])
    assert message["content"] == "".join(_plans(entry)[1]) == entry["text"]
    assert entry["stream"] is False and entry["protocol"] == "dashscope"
    assert entry["outcome"] == "complete"


async def test_native_non_sse_thinking_model_answers_with_reasoning(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """deepseek-r1 thinks by default but is not stream-only: one body with reasoning_content."""
    body = _native_body("Think then answer", model="deepseek-r1", tokens=10, think=7)
    response, raw = await _native_raw(sim_client, sim, body, sse=False)
    assert response.status_code == 200
    obj = json.loads(raw)
    message = obj["output"]["choices"][0]["message"]
    assert list(message) == ["content", "role", "reasoning_content"]
    entry = await log_entry(sim_client, sim, obj["request_id"])
    reasoning, answer = _plans(entry)
    assert message["reasoning_content"] == "".join(reasoning) == entry["reasoning"]
    assert message["content"] == "".join(answer)
    assert obj["usage"]["output_tokens"] == 17
    assert obj["usage"]["output_tokens_details"] == {"reasoning_tokens": 7}


# --------------------------------------------------------------------------------------------
# Native errors and faults
# --------------------------------------------------------------------------------------------


async def test_native_401_and_prefix(keyed_sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body("auth", tokens=5)
    for headers in ({}, {"authorization": "Bearer sk-wrong"}):
        response = await sim_client.post(_native_url(keyed_sim), json=body, headers=headers | SSE)
        assert response.status_code == 401
        request_id = response.json()["request_id"]
        assert re.fullmatch(UUID, request_id)
        assert (
            response.content
            == (
                '{"code":"InvalidApiKey","message":"Invalid API-key provided.",'
                f'"request_id":"{request_id}"}}'
            ).encode()
        )
    ok = await sim_client.post(
        _native_url(keyed_sim), json=body, headers={"authorization": "Bearer sk-test"} | SSE
    )
    assert ok.status_code == 200
    assert parse_native(ok.content)[-1].event == "result"
    unprefixed = keyed_sim.base.removesuffix("/simulator") + NATIVE_PATH
    assert (await sim_client.post(unprefixed, json=body)).status_code == 404


async def test_native_429_streams_as_200_and_error_event(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    response, raw = await _native_raw(
        sim_client, sim, _native_body("throttle me", fault="429", retry_after=2)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream;charset=UTF-8"
    assert response.headers["retry-after"] == "2"
    request_id = response.headers["x-request-id"]
    assert (
        raw
        == (
            "id:1\nevent:error\n:HTTP_STATUS/429\n"
            'data:{"code":"Throttling.RateQuota","message":"Requests rate limit exceeded, please '
            f'try again later.","request_id":"{request_id}"}}\n\n'
        ).encode()
    )
    entry = await log_entry(sim_client, sim, request_id)
    assert entry["outcome"] == "fault:429" and entry["status"] == 200
    assert entry["tokens_sent"] == 0


@pytest.mark.parametrize(
    ("framing", "status", "content_type"),
    [
        pytest.param("http", 429, "application/json", id="http"),
        pytest.param("sse200", 200, "text/event-stream;charset=UTF-8", id="sse200"),
        pytest.param("sse_status", 429, "application/json", id="sse_status"),
    ],
)
async def test_native_fault_framing(
    sim: Simulator, sim_client: httpx.AsyncClient, framing: str, status: int, content_type: str
) -> None:
    body = _native_body("framed", fault="429", fault_framing=framing)
    response, raw = await _native_raw(sim_client, sim, body)
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    if framing == "http":
        assert json.loads(raw)["code"] == "Throttling.RateQuota"
    else:
        (event,) = parse_native(raw)
        assert (event.id, event.event, event.status) == ("1", "error", "429")
        assert event.obj["code"] == "Throttling.RateQuota"


async def test_compatible_fault_framing_sse200(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """Compatible mode can also open with 200 and then send the error as a data line."""
    response, data = await sse_data(
        sim_client, sim, chat_body("framed", fault="503", fault_framing="sse200")
    )
    assert response.status_code == 200
    (payload,) = data
    assert json.loads(payload)["error"]["code"] == "ModelUnavailable"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        pytest.param("400", 400, "InvalidParameter", id="400"),
        pytest.param("401", 401, "InvalidApiKey", id="401"),
        pytest.param("403", 403, "AccessDenied", id="403"),
        pytest.param("429", 429, "Throttling.RateQuota", id="429"),
        pytest.param("500", 500, "InternalError.Algo", id="500"),
        pytest.param("503", 503, "ModelUnavailable", id="503"),
    ],
)
async def test_native_http_faults_without_sse(
    sim: Simulator, sim_client: httpx.AsyncClient, fault: str, status: int, code: str
) -> None:
    response, raw = await _native_raw(sim_client, sim, _native_body("fail", fault=fault), sse=False)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    obj = json.loads(raw)
    assert list(obj) == ["code", "message", "request_id"]
    assert obj["code"] == code and obj["message"]
    assert obj["request_id"] == response.headers["x-request-id"]
    entry = await log_entry(sim_client, sim, obj["request_id"])
    assert entry["outcome"] == f"fault:{fault}" and entry["status"] == status


async def test_native_midstream_error(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body("moderate me", tokens=40, fault="midstream_error", coalesce=1)
    response, raw = await _native_raw(sim_client, sim, body)
    assert response.status_code == 200
    events = parse_native(raw)
    *results, error = events
    assert [event.event for event in results] == ["result"] * 5
    assert all(_finish(event) == "null" for event in results)
    assert (error.id, error.event, error.status) == ("6", "error", "400")
    request_id = response.headers["x-request-id"]
    assert error.data == (
        '{"code":"DataInspectionFailed","message":"Output data may contain inappropriate '
        f'content.","request_id":"{request_id}"}}'
    )
    assert raw.endswith(b"}\n\n")
    entry = await log_entry(sim_client, sim, request_id)
    assert entry["tokens_sent"] == 5 and entry["outcome"] == "fault:midstream_error"


async def test_native_midstream_throttling(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body(
        "throttle me late", tokens=40, fault="midstream_error", midstream_kind="429"
    )
    _, raw = await _native_raw(sim_client, sim, body)
    *results, error = parse_native(raw)
    assert results and all(event.event == "result" for event in results)
    assert (error.event, error.status) == ("error", "429")
    assert error.obj["code"] == "Throttling.RateQuota"


async def test_native_fault_times(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body("throttled once", tokens=5, fault="429", fault_times=1)
    first = parse_native((await _native_raw(sim_client, sim, body))[1])
    second = parse_native((await _native_raw(sim_client, sim, body))[1])
    assert [e.event for e in first] == ["error"]
    assert second and all(e.event == "result" for e in second)


async def test_native_eof_has_no_final_event(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body("cut me off", tokens=40, fault="eof", fault_after=6)
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    assert all(_finish(event) == "null" for event in events)
    assert events[-1].obj["usage"]["output_tokens"] == 6
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    assert entry["outcome"] == "fault:eof" and entry["tokens_sent"] == 6


@pytest.mark.parametrize(
    ("body", "sse", "message"),
    [
        pytest.param(
            {"model": "qwen-plus", "input": {}},
            True,
            'Either "prompt" or "messages" must exist and cannot both be none',
            id="no-messages",
        ),
        pytest.param(
            {"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]},
            True,
            'Either "prompt" or "messages" must exist and cannot both be none',
            id="messages-outside-input",
        ),
        pytest.param(
            _native_body("x", incremental=False, parameters={"enable_thinking": True}),
            True,
            'The incremental_output parameter must be "true" when enable_thinking is true',
            id="thinking-not-incremental",
        ),
        pytest.param(
            _native_body("x", model="qwq-plus", incremental=None),
            True,
            'The incremental_output parameter must be "true" when enable_thinking is true',
            id="thinking-model-default-not-incremental",
        ),
        pytest.param(
            _native_body("x", result_format="text", parameters={"enable_thinking": True}),
            True,
            'The result_format parameter must be "message" when enable_thinking is true',
            id="thinking-text-format",
        ),
        pytest.param(
            _native_body("x", parameters={"enable_thinking": True}),
            False,
            "parameter.enable_thinking must be set to false for non-streaming calls",
            id="thinking-without-sse",
        ),
        pytest.param(
            _native_body("x", model="qwq-plus"),
            False,
            "This model only support stream mode, please enable the stream parameter to "
            "access the model.",
            id="stream-only-without-sse",
        ),
        pytest.param(
            _native_body("x", parameters={"max_tokens": 0}),
            True,
            "Range of max_tokens should be [1, 8192]",
            id="max-tokens",
        ),
        pytest.param(_native_body("x", bogus=1), True, "unknown sim option 'bogus'", id="bad-sim"),
    ],
)
async def test_native_invalid_parameter(
    sim: Simulator, sim_client: httpx.AsyncClient, body: dict[str, Any], sse: bool, message: str
) -> None:
    response, raw = await _native_raw(sim_client, sim, body, sse=sse)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    obj = json.loads(raw)
    assert list(obj) == ["code", "message", "request_id"]
    assert obj["code"] == "InvalidParameter"
    assert message in obj["message"]
    entry = await log_entry(sim_client, sim, obj["request_id"])
    assert entry["outcome"] == "rejected:400" and entry["protocol"] == "dashscope"
    assert entry["tokens_sent"] == 0 and entry["text"] == ""


async def test_native_disconnect_is_recorded(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    """Stop in the app closes the upstream: the simulator sees it and stops generating."""
    body = _native_body("a long answer to abandon", tokens=400, tps=40)
    async with sim_client.stream("POST", _native_url(sim), json=body, headers=SSE) as response:
        request_id = response.headers["x-request-id"]
        received = b""
        async for piece in response.aiter_raw():
            received += piece
            if received.count(b"\n\n") >= 3:
                break
    closed_at = time.time()
    # Noticed at once: the answer had 10 s to go; 2 s leaves a loaded machine room to get to
    # the simulator's event loop (the log says when it noticed, not when we looked).
    entry = await wait_for_outcome(sim_client, sim, request_id, "disconnected")
    assert entry["disconnected_at"] - closed_at < 2.0
    assert 3 <= entry["tokens_sent"] < 400

    async def sent_no_more() -> bool:
        later = await log_entry(sim_client, sim, request_id)
        return bool(later["tokens_sent"] == entry["tokens_sent"])

    # And it stopped generating: nothing more for as long as a dozen more tokens would take.
    await throughout(sent_no_more, "tokens were sent after the disconnect", during=0.3)
    later = await log_entry(sim_client, sim, request_id)
    assert later["text"] == "".join(_plans(later)[1][: later["tokens_sent"]])


# --------------------------------------------------------------------------------------------
# Native wire robustness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"fragment": 1}, id="fragment"),
        pytest.param({"crlf": 1}, id="crlf"),
        pytest.param({"weird": 1}, id="weird"),
        pytest.param({"shuffle": 1}, id="shuffle"),
        pytest.param({"keepalive": 1, "coalesce": 1}, id="keepalive"),
        pytest.param({"fragment": 1, "crlf": 1, "weird": 1, "keepalive": 1}, id="all"),
    ],
)
async def test_native_wire_options_still_parse_to_plan(
    sim: Simulator, sim_client: httpx.AsyncClient, options: dict[str, int]
) -> None:
    body = _native_body("多字节的中文回答 with some English", tokens=60, lang="zh", **options)
    response, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    text = "".join(_message(event)["content"] for event in events)
    entry = await log_entry(sim_client, sim, response.headers["x-request-id"])
    assert text == "".join(_plans(entry)[1]) == entry["text"]
    assert [event.id for event in events] == [str(n) for n in range(1, len(events) + 1)]
    assert _finish(events[-1]) == "stop"
    if options.get("weird"):
        assert "\u2028" in text and "\u0085" in text
    if options.get("crlf"):
        assert b"\r\n\r\n" in raw and re.search(rb"[^\r]\n", raw) is None
    if options.get("keepalive"):
        assert any("keepalive" in event.comments for event in events)  # inside an event
    if options.get("shuffle"):
        assert len({tuple(event.obj) for event in events}) > 1


async def test_native_keepalive_while_waiting(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = _native_body("ping me", tokens=5, ttft=0.35, keepalive=1)
    _, raw = await _native_raw(sim_client, sim, body)
    assert raw.startswith(b":keepalive\n\n:keepalive\n\n")


# --------------------------------------------------------------------------------------------
# Thinking, compatible mode
# --------------------------------------------------------------------------------------------


async def test_compatible_thinking_stream(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = chat_body("Explain server-sent events", tokens=20, think=15, seed=2)
    body["stream_options"] = {"include_usage": True}
    body["enable_thinking"] = True
    _, data = await sse_data(sim_client, sim, body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in data[:-1]]
    role, *middle, finish, usage = chunks
    assert role["choices"][0]["delta"] == {
        "content": None,
        "role": "assistant",
        "reasoning_content": "",
    }
    deltas = [chunk["choices"][0]["delta"] for chunk in middle]
    thinking = [d for d in deltas if d["content"] is None]
    answering = [d for d in deltas if d["content"] is not None]
    assert deltas == thinking + answering  # all reasoning first, then the answer
    assert thinking and answering
    assert all(set(d) == {"content", "reasoning_content"} for d in deltas)
    assert all(d["reasoning_content"] for d in thinking)
    assert all(d["reasoning_content"] is None and d["content"] for d in answering)
    assert finish["choices"][0]["delta"] == {"content": "", "reasoning_content": None}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["completion_tokens"] == 35
    assert usage["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 15,
        "text_tokens": 20,
    }
    entry = await log_entry(sim_client, sim, role["id"])
    reasoning, answer = _plans(entry)
    assert "".join(d["reasoning_content"] for d in thinking) == "".join(reasoning)
    assert entry["reasoning"] == "".join(reasoning) and entry["reasoning_tokens_sent"] == 15
    assert entry["reasoning"].startswith(("Okay", "Alright"))
    assert content_of(data) == "".join(answer) == entry["text"]
    assert entry["enable_thinking"] is True and entry["options"]["think"] == 15
    assert entry["first_token_at"] <= entry["first_answer_at"]
    # Thinking does not change the answer: the same request without it says the same.
    _, plain = await sse_data(
        sim_client, sim, chat_body("Explain server-sent events", tokens=20, seed=2)
    )
    assert content_of(plain) == content_of(data)


@pytest.mark.parametrize("key", ["reasoning", "reasoning_text"])
async def test_compatible_reasoning_field_variants(
    sim: Simulator, sim_client: httpx.AsyncClient, key: str
) -> None:
    body = chat_body("vLLM style", tokens=10, think=8, reasoning_field=key)
    _, data = await sse_data(sim_client, sim, body)
    assert "reasoning_content" not in "".join(data)
    chunks = [json.loads(payload) for payload in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"content": None, "role": "assistant", key: ""}
    reasoning = "".join(
        c["choices"][0]["delta"][key] or "" for c in chunks if c["choices"][0]["delta"].get(key)
    )
    entry = await log_entry(sim_client, sim, chunks[0]["id"])
    assert reasoning == entry["reasoning"] == "".join(_plans(entry)[0])
    assert entry["options"]["reasoning_field"] == key


async def test_compatible_inline_think_tags(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    _, data = await sse_data(
        sim_client, sim, chat_body("Tags please", tokens=10, think=8, reasoning_field="think")
    )
    chunks = [json.loads(payload) for payload in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    assert all(set(c["choices"][0]["delta"]) <= {"content", "role"} for c in chunks)
    entry = await log_entry(sim_client, sim, chunks[0]["id"])
    reasoning, answer = _plans(entry)
    expected = "<think>\n" + "".join(reasoning) + "\n</think>\n\n" + "".join(answer)
    assert content_of(data) == expected
    assert entry["text"] == "".join(answer) and entry["reasoning"] == "".join(reasoning)


async def test_thinking_model_defaults_and_enable_thinking_false(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    _, data = await sse_data(
        sim_client, sim, chat_body("Default thinking", model="qwq-plus", tokens=5)
    )
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert 48 <= entry["options"]["think"] <= 72
    assert entry["reasoning_tokens_sent"] == entry["options"]["think"]
    off = chat_body("Default thinking", model="qwq-plus", tokens=5)
    off["enable_thinking"] = False
    _, data = await sse_data(sim_client, sim, off)
    assert json.loads(data[0])["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["options"]["think"] == 0 and entry["reasoning"] == ""
    # The think option overrides enable_thinking: false.
    forced = {**off, "sim": {**off["sim"], "think": 4}}
    _, data = await sse_data(sim_client, sim, forced)
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["reasoning_tokens_sent"] == 4


async def test_chinese_reasoning_for_chinese_prompt(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("什么是背压？", tokens=10, think=30)
    _, data = await sse_data(sim_client, sim, body)
    entry = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert entry["options"]["lang"] == "zh"
    reasoning = entry["reasoning"]
    assert sum("\u4e00" <= char <= "\u9fff" for char in reasoning) > len(reasoning) / 2


async def test_compatible_enable_thinking_without_stream_is_400(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = chat_body("no stream", stream=False, tokens=5)
    body["enable_thinking"] = True
    response = await sim_client.post(sim.chat_url, json=body)
    assert response.status_code == 400
    request_id = response.json()["request_id"]
    assert (
        response.content
        == (
            '{"error":{"message":"parameter.enable_thinking must be set to false for non-streaming '
            'calls","type":"invalid_request_error","param":null,"code":"invalid_parameter_error"},'
            f'"id":"chatcmpl-{request_id}","request_id":"{request_id}"}}'
        ).encode()
    )
    entry = await log_entry(sim_client, sim, f"chatcmpl-{request_id}")
    assert entry["outcome"] == "rejected:400" and entry["enable_thinking"] is True


async def test_compatible_non_stream_with_think_option(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """The think option (not enable_thinking) may think in one body, like DeepSeek-R1 does."""
    response = await sim_client.post(
        sim.chat_url, json=chat_body("one body", stream=False, tokens=6, think=5)
    )
    assert response.status_code == 200
    obj = response.json()
    message = obj["choices"][0]["message"]
    entry = await log_entry(sim_client, sim, obj["id"])
    reasoning, answer = _plans(entry)
    assert message == {
        "role": "assistant",
        "content": "".join(answer),
        "reasoning_content": "".join(reasoning),
    }
    assert obj["usage"]["completion_tokens"] == 11
    assert obj["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5, "text_tokens": 6}
    assert entry["reasoning"] == "".join(reasoning) and entry["reasoning_tokens_sent"] == 5


async def test_thinking_is_paced_after_ttft(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    """ttft passes before the first reasoning token; the answer starts after the thinking."""
    body = chat_body("pace", tokens=3, think=10, ttft=0.3, tps=50, coalesce=1)
    start = time.monotonic()
    marks: list[tuple[float, dict[str, Any]]] = []
    async with sim_client.stream("POST", sim.chat_url, json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"]:
                    marks.append((time.monotonic() - start, chunk["choices"][0]["delta"]))
    first_reasoning = next(t for t, d in marks if d.get("reasoning_content"))
    first_answer = next(t for t, d in marks if d.get("content"))
    assert first_reasoning >= 0.28
    assert first_reasoning - marks[0][0] >= 0.25  # the role chunk does not wait for ttft
    assert first_answer - first_reasoning >= 0.9 * 10 / 50


# --------------------------------------------------------------------------------------------
# Thinking, native
# --------------------------------------------------------------------------------------------


async def test_native_thinking_stream(sim: Simulator, sim_client: httpx.AsyncClient) -> None:
    body = _native_body(
        "Explain server-sent events", tokens=20, think=15, seed=2, coalesce=1,
        parameters={"enable_thinking": True},
    )  # fmt: skip
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    messages = [_message(event) for event in events]
    assert all(list(m) == ["content", "reasoning_content", "role"] for m in messages)
    thinking = [m for m in messages if m["reasoning_content"]]
    answering = [m for m in messages if m["content"]]
    assert messages == thinking + answering
    assert all(m["content"] == "" for m in thinking)  # "" here, not null as in compatible mode
    assert all(m["reasoning_content"] == "" for m in answering)
    assert len(thinking) == 15 and len(answering) == 20
    usage = events[-1].obj["usage"]
    assert usage["output_tokens"] == 35
    assert usage["output_tokens_details"] == {"reasoning_tokens": 15}
    assert _finish(events[-1]) == "stop"
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    reasoning, answer = _plans(entry)
    assert "".join(m["reasoning_content"] for m in thinking) == "".join(reasoning)
    assert entry["reasoning"] == "".join(reasoning) and entry["reasoning_tokens_sent"] == 15
    assert "".join(m["content"] for m in answering) == "".join(answer) == entry["text"]
    # The same thinking and answer as the compatible route for the same seed.
    compat = chat_body("Explain server-sent events", tokens=20, think=15, seed=2)
    _, data = await sse_data(sim_client, sim, compat)
    other = await log_entry(sim_client, sim, json.loads(data[0])["id"])
    assert other["reasoning"] == entry["reasoning"] and other["text"] == entry["text"]


async def test_native_thinking_model_by_default(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    """qwq-plus thinks unless told not to; enable_thinking false lets it stream cumulatively."""
    _, raw = await _native_raw(sim_client, sim, _native_body("qwq", model="qwq-plus", tokens=5))
    entry = await log_entry(sim_client, sim, parse_native(raw)[0].obj["request_id"])
    assert entry["reasoning_tokens_sent"] == entry["options"]["think"] > 0
    body = _native_body(
        "qwq", model="qwq-plus", tokens=5, incremental=False,
        parameters={"enable_thinking": False},
    )  # fmt: skip
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    assert all(list(_message(event)) == ["content", "role"] for event in events)


async def test_native_reasoning_field_variant(
    sim: Simulator, sim_client: httpx.AsyncClient
) -> None:
    body = _native_body("renamed", tokens=5, think=4, reasoning_field="reasoning")
    _, raw = await _native_raw(sim_client, sim, body)
    events = parse_native(raw)
    assert all(list(_message(event)) == ["content", "reasoning", "role"] for event in events)
    entry = await log_entry(sim_client, sim, events[0].obj["request_id"])
    assert "".join(_message(event)["reasoning"] for event in events) == entry["reasoning"]


# --------------------------------------------------------------------------------------------
# Configuration and pure functions
# --------------------------------------------------------------------------------------------


async def test_thinking_patterns_from_cli(sim_client: httpx.AsyncClient) -> None:
    with running_simulator("--thinking-models", "custom-*") as custom:
        for model, thinks in (("custom-model", True), ("qwq-plus", False)):
            _, data = await sse_data(sim_client, custom, chat_body("x", model=model, tokens=3))
            entry = await log_entry(sim_client, custom, json.loads(data[0])["id"])
            assert (entry["reasoning_tokens_sent"] > 0) is thinks, model


def test_thinking_keyword_and_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_THINKING_MODELS", raising=False)
    app = make_app()
    assert app.thinking_models == list(DEFAULT_THINKING_MODELS)
    assert app.is_thinking("QwQ-32B") and app.is_thinking("deepseek-r1-distill")
    assert not app.is_thinking("qwen-plus")
    monkeypatch.setenv("SIM_THINKING_MODELS", "")
    assert not make_app().is_thinking("qwq-plus")
    monkeypatch.setenv("SIM_THINKING_MODELS", "from-env*")
    assert make_app().is_thinking("from-env-1")
    assert make_app(thinking_models="a*, b*").thinking_models == ["a*", "b*"]


@pytest.mark.parametrize("think", [1, 2, 7, 60, 300])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_plan_reasoning_exact_and_independent_of_answer(think: int, lang: str) -> None:
    messages = [{"role": "user", "content": "Explain streaming responses"}]
    opts = resolve_options("qwq-plus", messages, body_sim={"think": think, "lang": lang})
    pieces = plan_reasoning("qwq-plus", messages, opts)
    assert len(pieces) == think and all(pieces)
    assert "".join(pieces).rstrip()[-1] in ".?。？"
    assert plan_reasoning("qwq-plus", messages, opts) == pieces
    no_thinking = resolve_options("qwq-plus", messages, body_sim={"think": 0, "lang": lang})
    assert plan_answer("qwq-plus", messages, opts) == plan_answer("qwq-plus", messages, no_thinking)
    assert plan_reasoning("qwq-plus", messages, no_thinking) == []


def test_thinking_default_does_not_shift_other_defaults() -> None:
    messages = [{"role": "user", "content": "hello"}]
    plain = resolve_options("qwen-plus", messages)
    thinking = resolve_options("qwen-plus", messages, thinking=True)
    assert plain.think == 0 and 48 <= thinking.think <= 72
    assert (plain.ttft, plain.tps, plain.tokens) == (thinking.ttft, thinking.tps, thinking.tokens)
    assert resolve_options("qwen-plus", messages, thinking=True, body_sim={"think": 0}).think == 0


@pytest.mark.parametrize(
    "raw",
    [{"reasoning_field": "thoughts"}, {"fault_framing": "smoke"}, {"think": -1}],
)
def test_bad_thinking_options(raw: dict[str, Any]) -> None:
    with pytest.raises(SimOptionError):
        parse_options(raw)
