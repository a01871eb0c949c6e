"""DashScope's native text-generation protocol: request parsing, error bodies and event payloads.

Pure (no I/O, no clock): ``simulator.dashscope`` paces the tokens and writes the bytes, this
module only says what each event and error looks like. The shapes copy
``../shared/reference/protocols.md`` (b) and the verbatim curl capture in the provider page next
to it:

- an SSE event is ``id:N`` / ``event:result`` / ``:HTTP_STATUS/200`` / ``data:{json}`` and a blank
  line, with no space after the colons and no ``[DONE]``: the connection closes after the event
  whose ``finish_reason`` is not the string ``"null"``;
- ``usage`` (``total_tokens``, ``input_tokens``, ``output_tokens``) is cumulative in every event;
- ``incremental_output: false`` (the default) repeats the whole text so far in every event;
- while thinking, the inactive one of ``content``/``reasoning_content`` is ``""``, not null;
- errors are ``{"code","message","request_id"}``, as a JSON body or as an ``event:error`` frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ERRORS",
    "MISSING_MESSAGES",
    "PATH",
    "THINKING_INCREMENTAL",
    "THINKING_NON_STREAM",
    "THINKING_RESULT_FORMAT",
    "NativeEvents",
    "NativeRequest",
    "NativeRequestError",
    "error_object",
    "frame_lines",
    "parse_request",
]

PATH = "/api/v1/services/aigc/text-generation/generation"
"""The route, below the app's prefix (the real service serves it from its host root)."""
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
"""The route for requests with images (qwen-vl): content parts in, ``[{"text": …}]`` out."""

_INVALID_PARAMETER = "<400> InternalError.Algo.InvalidParameter: "

MISSING_MESSAGES = 'Either "prompt" or "messages" must exist and cannot both be none'
THINKING_NON_STREAM = "parameter.enable_thinking must be set to false for non-streaming calls"
THINKING_INCREMENTAL = (
    'The incremental_output parameter must be "true" when enable_thinking is true'
)
THINKING_RESULT_FORMAT = (
    'The result_format parameter must be "message" when enable_thinking is true'
)

ERRORS: dict[str, tuple[int, str, str]] = {
    "401": (401, "InvalidApiKey", "Invalid API-key provided."),
    "403": (403, "AccessDenied", "Access denied."),
    "429": (429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    "400": (
        400,
        "InvalidParameter",
        _INVALID_PARAMETER + "Range of max_tokens should be [1, 8192]",
    ),
    "500": (
        500,
        "InternalError.Algo",
        "An error occurred in model serving, error message is: "
        "[Request rejected by inference engine!]",
    ),
    "503": (503, "ModelUnavailable", "Model is unavailable, please try again later."),
    "invalid": (400, "InvalidParameter", "Required body invalid, please check the request body."),
    "data_inspection_failed": (
        400,
        "DataInspectionFailed",
        "Output data may contain inappropriate content.",
    ),
    "stream_only": (
        400,
        "InvalidParameter",
        "This model only support stream mode, please enable the stream parameter to access "
        "the model.",
    ),
    "thinking_non_stream": (400, "InvalidParameter", THINKING_NON_STREAM),
    "timeout": (500, "RequestTimeOut", "Response timeout!"),
    "no_vision": (
        400,
        "InvalidParameter",
        _INVALID_PARAMETER + "The model does not support image input.",
    ),
}
"""Fault or problem kind -> (HTTP status, native ``code``, default ``message``)."""


class NativeRequestError(ValueError):
    """The body is not a valid native request; the message is the 400 ``InvalidParameter`` text."""


def error_object(kind: str, request_id: str, message: str | None = None) -> tuple[int, dict]:
    """Status and body of a native error, keys in the captured order (code, message, id)."""
    status, code, default = ERRORS[kind]
    return status, {"code": code, "message": message or default, "request_id": request_id}


def frame_lines(event_id: int, event: str, status: int, data: str) -> list[str]:
    """The lines of one native SSE event, without the blank line that ends it."""
    return [f"id:{event_id}", f"event:{event}", f":HTTP_STATUS/{status}", f"data:{data}"]


@dataclass(frozen=True)
class NativeRequest:
    """What the simulator uses from a native body; ``None`` means "not sent"."""

    model: str
    messages: list[dict[str, Any]]
    result_format: str | None
    incremental: bool
    enable_thinking: bool | None
    max_tokens: int | None
    seed: Any
    sim: Mapping[str, Any] | None


def _optional_bool(parameters: Mapping[str, Any], key: str) -> bool | None:
    value = parameters.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise NativeRequestError(f"{_INVALID_PARAMETER}{key} must be a boolean")


def parse_request(body: Any) -> NativeRequest:
    """Validate a native body; ``input.prompt`` (legacy) becomes one user message."""
    if not isinstance(body, dict):
        raise NativeRequestError("Required body invalid, please check the request body format.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise NativeRequestError("Model not specified.")
    source = body.get("input")
    source = source if isinstance(source, dict) else {}
    messages = source.get("messages")
    if messages is None and isinstance(source.get("prompt"), str):
        messages = [{"role": "user", "content": source["prompt"]}]
    if not messages:
        raise NativeRequestError(MISSING_MESSAGES)
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m for m in messages
    ):
        raise NativeRequestError(f"{_INVALID_PARAMETER}Input should be a list of messages.")
    parameters = body.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise NativeRequestError(f"{_INVALID_PARAMETER}parameters must be an object")
    result_format = parameters.get("result_format")
    if result_format not in (None, "text", "message"):
        raise NativeRequestError(
            f'{_INVALID_PARAMETER}result_format must be "text" or "message", got {result_format!r}'
        )
    max_tokens = parameters.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 8192
    ):
        raise NativeRequestError(f"{_INVALID_PARAMETER}Range of max_tokens should be [1, 8192]")
    sim: dict[str, Any] | None = None
    for candidate in (body.get("sim"), parameters.get("sim")):
        if candidate is None:
            continue
        if not isinstance(candidate, Mapping):
            raise NativeRequestError(f"{_INVALID_PARAMETER}'sim' must be an object")
        sim = {**(sim or {}), **candidate}
    return NativeRequest(
        model=model,
        messages=messages,
        result_format=result_format,
        incremental=bool(_optional_bool(parameters, "incremental_output")),
        enable_thinking=_optional_bool(parameters, "enable_thinking"),
        max_tokens=max_tokens,
        seed=parameters.get("seed"),
        sim=sim,
    )


class NativeEvents:
    """Builds the ``data`` objects of one native response, keeping the text so far.

    ``reasoning_key`` is the key thinking goes under (``reasoning_content`` on the real service)
    or None when the response carries no separate thinking field.
    """

    def __init__(
        self,
        request_id: str,
        *,
        result_format: str,
        incremental: bool,
        reasoning_key: str | None,
        input_tokens: int,
        multimodal: bool = False,
    ) -> None:
        self.request_id = request_id
        self.multimodal = multimodal
        self.result_format = result_format
        self.incremental = incremental
        self.reasoning_key = reasoning_key
        self.input_tokens = input_tokens
        self.text = ""
        self.reasoning = ""

    def _content(self, text: str) -> Any:
        """The multimodal route answers in parts: ``[{"text": …}]`` (none while thinking)."""
        if not self.multimodal:
            return text
        return [{"text": text}] if text else []

    def usage(self, output_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
        """Cumulative usage; thinking responses add ``output_tokens_details``."""
        usage: dict[str, Any] = {
            "total_tokens": self.input_tokens + output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
        }
        if self.reasoning_key is not None:
            usage["output_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return usage

    def result(
        self,
        *,
        content: str = "",
        reasoning: str = "",
        finish_reason: str = "null",
        output_tokens: int,
        reasoning_tokens: int = 0,
    ) -> dict[str, Any]:
        """One ``event:result`` payload for newly generated ``content`` or ``reasoning``."""
        self.text += content
        self.reasoning += reasoning
        if not self.incremental:
            content, reasoning = self.text, self.reasoning
        output: dict[str, Any]
        if self.result_format == "text":
            output = {"finish_reason": finish_reason, "text": content}
        else:
            message: dict[str, Any] = {"content": self._content(content)}
            if self.reasoning_key is not None:
                message[self.reasoning_key] = reasoning
            message["role"] = "assistant"
            output = {"choices": [{"message": message, "finish_reason": finish_reason}]}
        return {
            "output": output,
            "usage": self.usage(output_tokens, reasoning_tokens),
            "request_id": self.request_id,
        }

    def complete(
        self,
        text: str,
        reasoning: str,
        finish_reason: str,
        output_tokens: int,
        reasoning_tokens: int,
    ) -> dict[str, Any]:
        """The whole non-SSE body: message ``content``, ``role``, then any thinking."""
        output: dict[str, Any]
        if self.result_format == "text":
            output = {"finish_reason": finish_reason, "text": text}
        else:
            message: dict[str, Any] = {"content": self._content(text), "role": "assistant"}
            if self.reasoning_key is not None:
                message[self.reasoning_key] = reasoning
            output = {"choices": [{"message": message, "finish_reason": finish_reason}]}
        return {
            "output": output,
            "usage": self.usage(output_tokens, reasoning_tokens),
            "request_id": self.request_id,
        }
