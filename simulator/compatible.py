"""OpenAI-compatible replies: error bodies, the streamed chunks and the whole JSON answer.

The streaming wire format copies the DashScope compatible-mode capture in
``../shared/reference/protocols.md`` (a): compact JSON with raw UTF-8, a role-only first chunk
(``content: null`` and ``reasoning_content: ""`` when thinking), coalesced deltas when behind
schedule, a finish chunk with ``content: ""``, the optional ``choices: []`` usage chunk and
``data: [DONE]``. Thinking counts in ``completion_tokens`` and is broken out in the details.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from simulator import native
from simulator.call import THINK_CLOSE, THINK_OPEN, Call, Plan
from simulator.pacing import CUT_FAULTS, paced, stall
from simulator.prompt import estimate_prompt_tokens
from simulator.wire import Send, Wire, dumps, shuffled, start_sse

__all__ = [
    "ERRORS",
    "INVALID_PARAMETER",
    "Chunks",
    "error_body",
    "midstream_error",
    "stream",
    "whole_body",
    "whole_error",
]

INVALID_PARAMETER = "<400> InternalError.Algo.InvalidParameter: "
"""The prefix of the service's 400 messages about a parameter."""

ERRORS: dict[str, tuple[int, str, str, str]] = {
    "401": (
        401,
        "Incorrect API key provided. For details, see: "
        "https://help.aliyun.com/zh/model-studio/error-code#apikey-error",
        "invalid_request_error",
        "invalid_api_key",
    ),
    "403": (403, "Access denied.", "access_denied", "access_denied"),
    "429": (
        429,
        "Requests rate limit exceeded, please try again later.",
        "limit_requests",
        "limit_requests",
    ),
    "400": (
        400,
        "<400> InternalError.Algo.InvalidParameter: Range of max_tokens should be [1, 8192]",
        "invalid_request_error",
        "invalid_parameter_error",
    ),
    "500": (
        500,
        "An error occurred in model serving, error message is: "
        "[Request rejected by inference engine!]",
        "internal_error",
        "internal_error",
    ),
    "503": (
        503,
        "Model is unavailable, please try again later.",
        "ModelUnavailable",
        "ModelUnavailable",
    ),
    "404": (404, "Not found.", "not_found", "not_found"),
    "data_inspection_failed": (
        400,
        "Output data may contain inappropriate content.",
        "data_inspection_failed",
        "data_inspection_failed",
    ),
    # The trailing space is in the service's message too.
    "stream_only": (
        400,
        "This model only support stream mode, please enable the stream parameter to access "
        "the model. ",
        "invalid_request_error",
        "invalid_parameter_error",
    ),
    "thinking_non_stream": (
        400,
        native.THINKING_NON_STREAM,
        "invalid_request_error",
        "invalid_parameter_error",
    ),
    # As OpenAI words it for a text-only model sent an image_url part.
    "no_vision": (
        400,
        "Invalid content type. image_url is only supported by certain models.",
        "invalid_request_error",
        "invalid_value",
    ),
}
"""Fault or problem kind -> (HTTP status, default ``message``, ``type``, ``code``)."""


def midstream_error(kind: str) -> dict[str, Any]:
    """The compatible-mode error chunk sent after some tokens (``midstream_kind``)."""
    _, message, err_type, code = ERRORS[kind]
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def error_body(
    kind: str, request_id: str, message: str | None = None, *, response_id: str | None = None
) -> tuple[int, bytes]:
    """Status and JSON body of an error; ``response_id`` adds the top-level ``"id"`` some have."""
    status, default_message, err_type, code = ERRORS[kind]
    body: dict[str, Any] = {
        "error": {
            "message": message or default_message,
            "type": err_type,
            "param": None,
            "code": code,
        },
    }
    if response_id is not None:
        body["id"] = response_id
    body["request_id"] = request_id
    return status, dumps(body).encode()


def _usage(
    messages: Sequence[Mapping[str, Any]], answer_tokens: int, reasoning_tokens: int | None = None
) -> dict[str, Any]:
    """OpenAI usage; thinking counts in ``completion_tokens`` and is broken out in the details."""
    prompt_tokens = estimate_prompt_tokens(messages)
    completion_tokens = answer_tokens + (reasoning_tokens or 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning_tokens,
            "text_tokens": answer_tokens,
        }
    return usage


class Chunks:
    """Builds ``chat.completion.chunk`` JSON lines in the service's key orders."""

    # The two choice orders seen in the reference capture for content chunks.
    _CONTENT_ORDERS = (
        ("finish_reason", "delta", "index", "logprobs"),
        ("delta", "finish_reason", "index", "logprobs"),
    )

    def __init__(self, call: Call, rng: random.Random) -> None:
        self.call = call
        self.rng = rng
        self.key = call.reasoning_key

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> str:
        obj = {
            "choices": choices,
            "object": "chat.completion.chunk",
            "usage": usage,
            "created": self.call.created,
            "system_fingerprint": None,
            "model": self.call.model,
            "id": self.call.sim_id,
        }
        return dumps(shuffled(obj, self.rng) if self.call.opts.shuffle else obj)

    def role(self) -> str:
        delta: dict[str, Any] = {"content": "", "role": "assistant"}
        if self.key is not None:
            delta = {"content": None, "role": "assistant", self.key: ""}
        choice = {"delta": delta, "index": 0, "logprobs": None, "finish_reason": None}
        return self._envelope([choice], None)

    def _delta(self, delta: dict[str, Any]) -> str:
        values = {"finish_reason": None, "delta": delta, "index": 0, "logprobs": None}
        order = self.rng.choice(self._CONTENT_ORDERS)
        return self._envelope([{key: values[key] for key in order}], None)

    def content(self, text: str) -> str:
        delta: dict[str, Any] = {"content": text}
        if self.key is not None:
            delta[self.key] = None
        return self._delta(delta)

    def reasoning(self, text: str) -> str:
        return self._delta({"content": None, self.key or "reasoning_content": text})

    def finish(self, reason: str) -> str:
        delta: dict[str, Any] = {"content": ""}
        if self.key is not None:
            delta[self.key] = None
        choice = {"finish_reason": reason, "delta": delta, "index": 0, "logprobs": None}
        return self._envelope([choice], None)

    def usage(self, answer_tokens: int, reasoning_tokens: int) -> str:
        thinking = self.call.opts.think > 0
        return self._envelope(
            [],
            _usage(self.call.messages, answer_tokens, reasoning_tokens if thinking else None),
        )


async def stream(send: Send, call: Call) -> None:
    """Stream the plan as compatible-mode SSE: role chunk, deltas, finish, usage, [DONE]."""
    opts, entry = call.opts, call.entry
    rng = random.Random(call.rng_seed + "|wire")
    chunks = Chunks(call, rng)
    wire = Wire(send, opts, rng)
    plan = Plan.of(call)

    await start_sse(send, call.request_id)
    entry["status"] = 200
    await wire.event(chunks.role())
    async with contextlib.aclosing(paced(call, plan, wire, rng)) as pieces:
        async for piece in pieces:
            if call.inline_think:
                # vLLM without a reasoning parser: the tags are part of the content.
                prefix = ""
                if piece.first_of_phase:
                    prefix = THINK_OPEN if piece.reasoning else THINK_CLOSE
                await wire.event(chunks.content(prefix + piece.text))
            elif piece.reasoning:
                await wire.event(chunks.reasoning(piece.text))
            else:
                await wire.event(chunks.content(piece.text))

    if opts.fault == "eof":
        await wire.close()
    elif opts.fault == "midstream_error":
        await wire.event(dumps(midstream_error(opts.midstream_kind)))
        await wire.close()
    elif opts.fault == "stall":
        await stall(wire)
        await wire.close()
    else:
        await wire.event(chunks.finish(plan.finish_reason))
        if call.include_usage:
            await wire.event(chunks.usage(entry["tokens_sent"], entry["reasoning_tokens_sent"]))
        await wire.event("[DONE]")
        await wire.close()
    faulted = opts.fault in CUT_FAULTS
    entry.update(outcome=f"fault:{opts.fault}" if faulted else "complete", finished_at=time.time())


def whole_body(call: Call, plan: Plan, content: str, reasoning: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streaming answer."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if call.reasoning_key is not None:
        message[call.reasoning_key] = reasoning
    thinking_tokens = len(plan.reasoning)
    return {
        "choices": [
            {
                "message": message,
                "finish_reason": plan.finish_reason,
                "index": 0,
                "logprobs": None,
            }
        ],
        "object": "chat.completion",
        "usage": _usage(
            call.messages, plan.limit, thinking_tokens if call.opts.think > 0 else None
        ),
        "created": call.created,
        "system_fingerprint": None,
        "model": call.model,
        "id": call.sim_id,
    }


def whole_error(call: Call) -> tuple[int, bytes]:
    """What a whole call gets instead of its answer under ``stall`` or ``midstream_error``."""
    if call.opts.fault == "stall":
        return error_body("500", call.request_id, "Response timeout!")
    return error_body(call.opts.midstream_kind, call.request_id)
