"""The OpenAI-compatible chat-completions dialect (DashScope compatible mode, OpenAI, vLLM,
Ollama, llama.cpp): request bodies and the pure parsers of its chunks and completions.

Wire facts it relies on (../shared/reference/protocols.md (a)): a role-only first chunk, null
or empty content, ``finish_reason`` in the same chunk as ``content: ""``, an optional
``choices: []`` usage chunk after the finish, ``data: [DONE]`` at the end, and
``{"error": {...}}`` objects that can arrive after HTTP 200.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import payloads
from .errors import stream_error
from .events import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    TextDelta,
    UpstreamProtocolError,
)
from .wording import Wording

# The parser's state depends on these, so options must not override them.
RESERVED_KEYS = frozenset({"model", "messages", "stream", "stream_options"})


def parse_chunk(obj: Mapping[str, Any]) -> list[Event]:
    """Events carried by one decoded ``chat.completion.chunk`` (pure, order = wire order).

    The role-only first chunk and empty/null content give nothing; ``finish_reason`` is read
    independently of content (the finish chunk carries ``content: ""``); a ``choices: []``
    chunk may carry ``usage``; an ``error`` object gives ``Failed(UpstreamStreamError)``.
    """
    if obj.get("error"):
        return [Failed(stream_error(obj))]
    events: list[Event] = []
    choice = payloads.first_choice(obj)
    if choice is not None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = payloads.reasoning_text(delta)
            if reasoning:
                events.append(ReasoningDelta(reasoning))
            text = payloads.content_text(delta.get("content"))
            if text:
                events.append(TextDelta(text))
        reason = payloads.finish_reason(choice)
        if reason is not None:
            events.append(Finished(reason, request_id=payloads.body_request_id(obj)))
    usage = payloads.usage(obj)
    if usage is not None:
        events.append(usage)
    return events


def parse_completion(obj: Mapping[str, Any]) -> list[Event]:
    """Events for a whole non-streaming ``chat.completion`` body (pure).

    Order: ReasoningDelta, TextDelta, Usage, Finished. A body with no choice is a protocol error.
    """
    if obj.get("error"):
        return [Failed(stream_error(obj))]
    choice = payloads.first_choice(obj)
    if choice is None:
        empty = Wording("The model server's reply contained no answer.")
        return [Failed(UpstreamProtocolError(empty))]
    events: list[Event] = []
    message = choice.get("message")
    if isinstance(message, Mapping):
        reasoning = payloads.reasoning_text(message)
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        text = payloads.content_text(message.get("content"))
        if text:
            events.append(TextDelta(text))
    usage = payloads.usage(obj)
    if usage is not None:
        events.append(usage)
    # A complete non-streaming body is a finished answer even if a server omits the reason.
    reason = payloads.finish_reason(choice) or "stop"
    events.append(Finished(reason, request_id=payloads.body_request_id(obj)))
    return events


class OpenAIStream:
    """Per-reply state of an OpenAI-style SSE stream: only ``[DONE]`` ends it early."""

    # Unnamed events (httpx-sse calls them "message"), plus DashScope-native "error" frames
    # that some proxies pass on behind HTTP 200; any other type (``ping`` …) is not ours.
    EVENT_TYPES = frozenset({"message", "error"})

    def accepts(self, event: str) -> bool:
        return event in self.EVENT_TYPES

    def is_end(self, data: str) -> bool:
        return data.startswith("[DONE]")

    def feed(self, event: str, obj: Mapping[str, Any]) -> list[Event]:
        if event == "error":  # DashScope-native framing behind HTTP 200, seen on proxies
            obj = obj if obj.get("error") else {"error": obj}
        return parse_chunk(obj)


class OpenAIDialect:
    """``POST {base}/chat/completions`` with a standard body; extras go at the top level."""

    name = "openai"
    # The transport's x-request-id is the one support can look up; chunk ids are per server.
    header_id_wins = True

    def url(self, base_url: str, body: Mapping[str, Any] | None = None) -> str:
        return f"{base_url}/chat/completions"

    def body(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        include_usage: bool,
    ) -> dict[str, Any]:
        clash = RESERVED_KEYS.intersection(options)
        if clash:
            raise ValueError(f"options must not override {sorted(clash)}")
        body: dict[str, Any] = {
            "model": model,
            "messages": [payloads.openai_message(m) for m in messages],
            "stream": stream,
        }
        if stream and include_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(options)
        return body

    def headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if stream:
            headers["Cache-Control"] = "no-store"
        return headers

    def needs_incremental(self, model: str) -> None:
        """Chat-completions streams are always deltas."""

    def stream_parser_for(self, body: Mapping[str, Any]) -> OpenAIStream:
        return OpenAIStream()

    def parse_whole(self, obj: Mapping[str, Any]) -> list[Event]:
        return parse_completion(obj)
