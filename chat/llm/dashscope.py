"""DashScope's native text-generation dialect: ``input.messages``, ``parameters``, and its SSE.

Wire facts (../shared/reference/protocols.md (b), and the provider's own samples):

- streaming is asked for with the header ``X-DashScope-SSE: enable``; events look like
  ``id:1`` / ``event:result`` / ``:HTTP_STATUS/200`` (a comment) / ``data:{...}``;
- ``finish_reason`` is the *string* ``"null"`` until the last event; there is no ``[DONE]``:
  the connection closes after the event whose reason is "stop", "length" or "tool_calls";
- ``usage`` (``input_tokens``/``output_tokens``/``total_tokens``) is cumulative on every event;
- with ``incremental_output: false`` every event carries the whole text so far, which
  ``Cumulative`` turns back into deltas, so the relay sees the same stream either way;
- thinking arrives as ``message.reasoning_content`` with ``content: ""`` (not null);
- errors come as ``event:error`` frames (also behind HTTP 200) or bodies with top-level
  ``code``/``message``/``request_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from . import payloads
from .errors import clean, error_from_event
from .events import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    TextDelta,
    UpstreamProtocolError,
    Usage,
)
from .wording import Wording

logger = logging.getLogger(__name__)

GENERATION_PATH = "/services/aigc/text-generation/generation"
# Requests with images (qwen-vl and other vision models) go here instead; its content is a list
# of parts both ways (the answer's too: ``[{"text": …}]``, read by ``payloads.content_text``).
MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"
# The parser's state depends on these, so options must not override them.
RESERVED_PARAMETERS = frozenset({"result_format", "incremental_output"})


class Cumulative:
    """Turns "the whole text so far" into the part that is new.

    If a server ever rewrites earlier text (the new text does not extend the old), only what
    follows the common prefix is emitted and the mismatch is logged: text already shown to
    the user cannot be taken back.
    """

    def __init__(self) -> None:
        self.seen = ""

    def delta(self, whole: str) -> str:
        seen = self.seen
        if not whole.startswith(seen):
            logger.warning(
                "cumulative output rewrote earlier text (%d -> %d chars)", len(seen), len(whole)
            )
        if len(whole) <= len(seen):
            return ""
        self.seen = whole
        return whole[len(seen) :]


def _message_parts(obj: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(reasoning, content, finish_reason) of one native event, message or text format."""
    output = obj.get("output")
    if not isinstance(output, Mapping):
        return "", "", None
    choice = payloads.first_choice(output)
    if choice is not None:
        message = choice.get("message")
        reasoning = content = ""
        if isinstance(message, Mapping):
            reasoning = payloads.reasoning_text(message)
            content = payloads.content_text(message.get("content"))
        return reasoning, content, payloads.finish_reason(choice)
    text = output.get("text")  # result_format "text"
    return "", text if isinstance(text, str) else "", payloads.finish_reason(output)


def _deltas(reasoning: str, content: str) -> list[Event]:
    """Thinking before answer, as both arrive in one event; empty pieces are no events."""
    events: list[Event] = []
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    if content:
        events.append(TextDelta(content))
    return events


class DashScopeStream:
    """Per-reply state of a native SSE stream (cumulative text, last usage seen)."""

    # "result" and "error" frames; unnamed ones ("message") from proxies that drop the line.
    EVENT_TYPES = frozenset({"result", "error", "message"})

    def __init__(self, incremental: bool) -> None:
        self._incremental = incremental
        self._text = Cumulative()
        self._reasoning = Cumulative()
        self._usage: Usage | None = None

    def accepts(self, event: str) -> bool:
        return event in self.EVENT_TYPES

    def is_end(self, data: str) -> bool:
        return False  # no [DONE]: the last event has a real finish_reason, then EOF

    def feed(self, event: str, obj: Mapping[str, Any]) -> list[Event]:
        if event == "error" or ("code" in obj and "output" not in obj):
            return [Failed(error_from_event(obj))]
        if obj.get("error"):  # a compatible-style error line from a proxy in between
            return [Failed(error_from_event(obj["error"]))]
        reasoning, content, reason = _message_parts(obj)
        if not self._incremental:
            reasoning = self._reasoning.delta(reasoning)
            content = self._text.delta(content)
        events = _deltas(reasoning, content)
        usage = payloads.usage(obj)
        if usage is not None and usage != self._usage:
            self._usage = usage
            events.append(usage)
        if reason is not None:
            events.append(Finished(reason, request_id=clean(obj.get("request_id"))))
        return events


def parse_response(obj: Mapping[str, Any]) -> list[Event]:
    """Events of a whole non-streaming native body (pure)."""
    if "code" in obj and "output" not in obj:
        return [Failed(error_from_event(obj))]
    if not isinstance(obj.get("output"), Mapping):
        empty = Wording("The model server's reply contained no answer.")
        return [Failed(UpstreamProtocolError(empty))]
    reasoning, content, reason = _message_parts(obj)
    events = _deltas(reasoning, content)
    usage = payloads.usage(obj)
    if usage is not None:
        events.append(usage)
    events.append(Finished(reason or "stop", request_id=clean(obj.get("request_id"))))
    return events


def is_multimodal(body: Mapping[str, Any] | None) -> bool:
    """Whether a native body carries content parts (images): the multimodal route's."""
    messages = (body or {}).get("input", {}).get("messages") or ()
    return any(isinstance(m.get("content"), list) for m in messages)


class DashScopeDialect:
    """``POST {base}/services/aigc/text-generation/generation``, e.g. base
    ``https://dashscope.aliyuncs.com/api/v1``; request options go into ``parameters``."""

    name = "dashscope"
    header_id_wins = False  # every event carries request_id; headers are only a fallback

    def __init__(self, *, incremental: bool = True) -> None:
        self.incremental = incremental
        self._incremental_only: set[str] = set()  # models that refused cumulative output

    def needs_incremental(self, model: str) -> None:
        self._incremental_only.add(model)

    def url(self, base_url: str, body: Mapping[str, Any] | None = None) -> str:
        return f"{base_url}{MULTIMODAL_PATH if is_multimodal(body) else GENERATION_PATH}"

    def _incremental_for(self, model: str, parameters: Mapping[str, Any]) -> bool:
        # DashScope: "The incremental_output parameter must be true when enable_thinking is true".
        return (
            self.incremental
            or parameters.get("enable_thinking") is True
            or model in self._incremental_only
        )

    def body(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        include_usage: bool,
    ) -> dict[str, Any]:
        clash = ({"model", "input", "messages", "stream"} | RESERVED_PARAMETERS).intersection(
            options
        )
        if clash:
            raise ValueError(f"options must not override {sorted(clash)}")
        parameters: dict[str, Any] = {"result_format": "message", **options}
        if stream:
            parameters["incremental_output"] = self._incremental_for(model, options)
        return {
            "model": model,
            "input": {
                "messages": [
                    payloads.dashscope_message(m, multimodal=payloads.has_images(messages))
                    for m in messages
                ]
            },
            "parameters": parameters,
        }

    def headers(self, stream: bool) -> dict[str, str]:
        if stream:
            return {
                "Accept": "text/event-stream",
                "X-DashScope-SSE": "enable",
                "Cache-Control": "no-store",
            }
        return {"Accept": "application/json"}

    def stream_parser_for(self, body: Mapping[str, Any]) -> DashScopeStream:
        return DashScopeStream(bool(body.get("parameters", {}).get("incremental_output", True)))

    def parse_whole(self, obj: Mapping[str, Any]) -> list[Event]:
        return parse_response(obj)
