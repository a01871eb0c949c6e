"""Pure readers for the fields both protocols share: content parts, reasoning, usage, finish."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import clean
from .events import Usage

# Fields carrying chain-of-thought text: DashScope/DeepSeek/llama.cpp, vLLM (renamed), chat-ui.
REASONING_KEYS = ("reasoning_content", "reasoning", "reasoning_text")


def content_text(content: Any) -> str:
    """``content`` as text: a string, or a list of parts like ``[{"type":"text","text":...}]``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif (
                isinstance(part, Mapping)
                and part.get("type", "text") == "text"
                and isinstance(part.get("text"), str)
            ):
                pieces.append(part["text"])
        return "".join(pieces)
    return ""


def openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A context message for chat completions: with ``images`` (data URLs), its content
    becomes parts, the text then each image; without, it is sent exactly as it is."""
    out = {key: value for key, value in message.items() if key != "images"}
    pictures = message.get("images")
    if pictures:
        out["content"] = [
            {"type": "text", "text": message.get("content", "")},
            *({"type": "image_url", "image_url": {"url": url}} for url in pictures),
        ]
    return out


def dashscope_message(message: Mapping[str, Any], *, multimodal: bool) -> dict[str, Any]:
    """A context message for DashScope native: in a multimodal request every content is a
    list (``[{"image": …}, …, {"text": …}]``), else it is sent exactly as it is."""
    out = {key: value for key, value in message.items() if key != "images"}
    if multimodal:
        pictures = message.get("images") or ()
        out["content"] = [
            *({"image": url} for url in pictures),
            {"text": message.get("content", "")},
        ]
    return out


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(message.get("images") for message in messages)


def reasoning_text(container: Mapping[str, Any]) -> str:
    """First non-empty reasoning field; servers in transition send the same text under two."""
    for key in REASONING_KEYS:
        text = content_text(container.get(key))
        if text:
            return text
    return ""


def token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage(obj: Mapping[str, Any]) -> Usage | None:
    usage = obj.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = token_count(usage.get("input_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if completion is None:
        completion = token_count(usage.get("output_tokens"))
    total = token_count(usage.get("total_tokens"))
    if prompt is None and completion is None and total is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def finish_reason(choice: Mapping[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    # DashScope native uses the *string* "null" while generating.
    if isinstance(reason, str) and reason and reason != "null":
        return reason
    return None


def first_choice(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return None


def body_request_id(obj: Mapping[str, Any]) -> str | None:
    return clean(obj.get("request_id")) or clean(obj.get("id"))
