"""Thinking under every name servers give it, and the ``stream_options`` fallback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from chat.llm import ChatClient, Event, Failed, Finished, ReasoningDelta, TextDelta, Usage
from chat.llm.thinking import ThinkTags
from tests.support.doubles import SSE, mock_http

BASE = "http://upstream.test/v1"
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
THOUGHT = "Rayleigh scattering: shorter wavelengths scatter more. <b>not a tag</b>"
ANSWER = "Because air scatters blue light more than red.\n\nThat is all."


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> bytes:
    body = {
        "choices": [{"delta": {"content": content, **delta}, "index": 0, "finish_reason": finish}],
        "id": "chatcmpl-t",
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def run_tags(pieces: list[str]) -> list[Event]:
    tags = ThinkTags()
    events: list[Event] = []
    for piece in pieces:
        events += tags.feed(TextDelta(piece))
    return events + tags.flush()


def joined(events: list[Event], kind: type[TextDelta] | type[ReasoningDelta]) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def test_think_tags_split_at_every_boundary() -> None:
    """A ``<think>`` block opening the content, cut in two anywhere, tags included."""
    raw = f"<think>{THOUGHT}</think>\n\n{ANSWER}"
    for i in range(len(raw) + 1):
        events = run_tags([raw[:i], raw[i:]])
        assert joined(events, ReasoningDelta) == THOUGHT, f"split at {i}"
        assert joined(events, TextDelta) == ANSWER, f"split at {i}"
        last_thought = max(i for i, e in enumerate(events) if isinstance(e, ReasoningDelta))
        assert all(isinstance(e, ReasoningDelta) for e in events[: last_thought + 1])


def test_think_tags_trim_the_blank_lines_around_a_thought() -> None:
    """DeepSeek-R1 style ``<think>\n…\n</think>\n\n``: the thought is saved without them."""
    raw = f"<think>\n{THOUGHT}\n\n</think>\n\n{ANSWER}"
    for i in range(len(raw) + 1):
        events = run_tags([raw[:i], raw[i:]])
        assert joined(events, ReasoningDelta) == THOUGHT, f"split at {i}"
        assert joined(events, TextDelta) == ANSWER, f"split at {i}"
    inner = "Line one.\n\nLine two."
    assert joined(run_tags(list(f"<think>\n{inner}\n</think>x")), ReasoningDelta) == inner


def test_think_tags_one_character_at_a_time() -> None:
    raw = f"  <think>{THOUGHT}</think>{ANSWER}"
    events = run_tags(list(raw))
    assert joined(events, ReasoningDelta) == THOUGHT
    assert joined(events, TextDelta) == ANSWER


@pytest.mark.parametrize(
    ("pieces", "thought", "text"),
    [
        pytest.param(["Plain answer <think>x</think>"], "", "Plain answer <think>x</think>",
                     id="tag-mid-answer-is-text"),
        pytest.param(["<thi", "s is text"], "", "<this is text", id="almost-a-tag"),
        pytest.param(["<think>never closed"], "never closed", "", id="unclosed-is-thought"),
        pytest.param(["<thi"], "", "<thi", id="cut-off-prefix-is-text"),
        pytest.param(["<think></think>Answer"], "", "Answer", id="empty-thought"),
    ],
)  # fmt: skip
def test_think_tag_edges(pieces: list[str], thought: str, text: str) -> None:
    events = run_tags(pieces)
    assert joined(events, ReasoningDelta) == thought
    assert joined(events, TextDelta) == text


def test_think_tags_leave_other_events_alone() -> None:
    tags = ThinkTags()
    usage = Usage(1, 2, 3)
    assert tags.feed(ReasoningDelta("r")) == [ReasoningDelta("r")]
    assert tags.feed(usage) == [usage]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "reasoning_text"])
async def test_every_reasoning_field_name(closing: list[httpx.AsyncClient], field: str) -> None:
    raw = (
        chunk(None, role="assistant", **{field: ""})
        + chunk(None, **{field: "Think"})
        + chunk(None, **{field: "ing."})
        + chunk("Answer", **{field: None})
        + chunk("", "stop")
        + b"data: [DONE]\n\n"
    )
    http = mock_http(lambda r: httpx.Response(200, headers=SSE, content=raw))
    closing.append(http)
    events = [e async for e in ChatClient(http, BASE).stream_reply("m", MESSAGES)]
    assert events == [
        ReasoningDelta("Think"),
        ReasoningDelta("ing."),
        TextDelta("Answer"),
        Finished("stop", request_id="chatcmpl-t"),
    ]


async def test_think_tags_in_a_streamed_reply(closing: list[httpx.AsyncClient]) -> None:
    raw = (
        chunk("<thi")
        + chunk("nk>Short")
        + chunk(" thought</th")
        + chunk("ink>\n\n")
        + chunk("Answer.")
        + chunk("", "stop")
        + b"data: [DONE]\n\n"
    )
    http = mock_http(lambda r: httpx.Response(200, headers=SSE, content=raw))
    closing.append(http)
    events = [e async for e in ChatClient(http, BASE).stream_reply("m", MESSAGES)]
    assert joined(events, ReasoningDelta) == "Short thought"
    assert joined(events, TextDelta) == "Answer."
    assert isinstance(events[-1], Finished)


async def test_think_tags_in_a_whole_reply(closing: list[httpx.AsyncClient]) -> None:
    body = {
        "choices": [{"message": {"content": "<think>Hmm.</think>Yes."}, "finish_reason": "stop"}],
    }
    http = mock_http(lambda r: httpx.Response(200, json=body))
    closing.append(http)
    client = ChatClient(http, BASE)
    events = [e async for e in client.stream_reply("m", MESSAGES, stream=False)]
    assert events[:2] == [ReasoningDelta("Hmm."), TextDelta("Yes.")]


async def test_server_rejecting_stream_options_is_asked_again_without(
    closing: list[httpx.AsyncClient],
) -> None:
    """Some OpenAI-compatible servers refuse the field: retry once without it, and remember."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "stream_options" in body:
            return httpx.Response(
                400, json={"error": {"message": "Unrecognized request argument: stream_options"}}
            )
        return httpx.Response(200, headers=SSE, content=chunk("Hi", "stop") + b"data: [DONE]\n\n")

    http = mock_http(handler)
    closing.append(http)
    client = ChatClient(http, BASE, include_usage=True)
    for _ in range(2):
        events = [e async for e in client.stream_reply("m", MESSAGES)]
        assert events == [TextDelta("Hi"), Finished("stop", request_id="chatcmpl-t")]
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    assert client.include_usage is False


async def test_other_400s_are_not_retried(closing: list[httpx.AsyncClient]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})

    http = mock_http(handler)
    closing.append(http)
    events = [e async for e in ChatClient(http, BASE).stream_reply("m", MESSAGES)]
    assert isinstance(events[-1], Failed)
    assert len(calls) == 1
