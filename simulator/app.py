"""The simulator as a plain ASGI 3 application (no framework, so it mounts anywhere).

Routes, all below an optional ``prefix`` (e.g. ``/simulator`` when mounted inside the Django
ASGI router):

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions, streamed or not.
- ``POST /api/v1/services/aigc/text-generation/generation``: DashScope's native protocol, SSE
  with the ``X-DashScope-SSE: enable`` header, one JSON body without it (see
  ``simulator.native``).
- ``GET  /v1/models``: OpenAI model list.
- ``GET  /_sim/requests`` and ``/_sim/requests/{sim_id}``: the in-memory request log that tests
  use to see what the upstream observed (text and thinking sent, disconnects). ``DELETE
  /_sim/requests`` clears it. ``sim_id`` is ``chatcmpl-<request_id>`` for the compatible route
  and the bare ``request_id`` for the native one.

Stream-only models (QwQ, Qwen3 open-source, … per the reference's "Parameter rules") answer a
non-streaming call with DashScope's 400; which models count is set by shell-style patterns
(``SIM_STREAM_ONLY_MODELS`` / ``stream_only_models``). Thinking models (``SIM_THINKING_MODELS`` /
``thinking_models``) think by default; ``enable_thinking`` (compatible: top-level; native:
``parameters.enable_thinking``) turns thinking on or off for any model, and the ``think`` option
overrides both. Thinking is paced like the answer: ``ttft`` passes before the first reasoning
token, then reasoning and answer tokens follow at ``tps``.

The compatible streaming wire format copies the DashScope compatible-mode capture in
``../shared/reference/protocols.md`` (a): compact JSON with raw UTF-8, a role-only first chunk
(``content: null`` and ``reasoning_content: ""`` when thinking), coalesced deltas when behind
schedule, a finish chunk with ``content: ""``, the optional ``choices: []`` usage chunk and
``data: [DONE]``. The native one copies (b): ``id:``/``event:``/``:HTTP_STATUS/200``/``data:``
events, cumulative usage, the string ``"null"`` as finish reason, and no ``[DONE]``.

Each log entry records ``protocol`` (``openai`` or ``dashscope``), what was sent (``text`` and
``tokens_sent`` for the answer, ``reasoning`` and ``reasoning_tokens_sent`` for the thinking,
without any ``<think>`` tags), timings (``first_token_at`` is the first token of either kind,
``first_answer_at`` the first answer token) and the outcome; with ``fault_times``, ``attempt``
counts the requests of that message so far (the fault hits attempts 1 to ``fault_times``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import json
import os
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

from simulator import native
from simulator.script import (
    HTTP_FAULTS,
    SimOptionError,
    SimOptions,
    estimate_prompt_tokens,
    last_user_text,
    parse_directive_string,
    parse_options,
    plan_answer,
    plan_reasoning,
    prompt_of,
    resolve_options,
)

__all__ = ["ASGIApp", "RequestLog", "SimulatorApp", "application", "make_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MODELS = (
    "qwen-plus",
    "qwen-max",
    "qwen-turbo",
    "qwen-flash",
    "qwen3-235b-a22b",
    "qwq-plus",
)
DEFAULT_STREAM_ONLY_MODELS = ("qwq*", "qwen3-*", "*-thinking*")
"""Shell-style patterns (matched case-insensitively) of models that refuse ``stream: false``."""
DEFAULT_THINKING_MODELS = ("qwq*", "qwen3-*", "*-thinking*", "deepseek-r1*")
"""Shell-style patterns (matched case-insensitively) of models that think unless told not to."""
STALL_MAX_SECONDS = 600.0
LOG_SIZE = 1000
FAULT_COUNTERS = 1000
"""How many prompts' ``fault_times`` counters are kept (the oldest is forgotten first)."""
_CUT_FAULTS = frozenset({"eof", "midstream_error", "stall"})
"""Faults that end a response after ``fault_after`` tokens."""
_THINK_OPEN = "<think>\n"
_THINK_CLOSE = "\n</think>\n\n"

_ERRORS: dict[str, tuple[int, str, str, str]] = {
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
}


def _midstream_error(kind: str) -> dict[str, Any]:
    """The compatible-mode error chunk sent after some tokens (``midstream_kind``)."""
    _, message, err_type, code = _ERRORS[kind]
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


_INVALID_PARAMETER = "<400> InternalError.Algo.InvalidParameter: "


def _dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, the way DashScope writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _error_body(
    kind: str, request_id: str, message: str | None = None, *, response_id: str | None = None
) -> tuple[int, bytes]:
    """Status and JSON body of an error; ``response_id`` adds the top-level ``"id"`` some have."""
    status, default_message, err_type, code = _ERRORS[kind]
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
    return status, _dumps(body).encode()


def _parse_patterns(text: str) -> list[str]:
    """Comma-separated patterns, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class RequestLog:
    """The last ``size`` chat requests, as live dicts the handlers keep updating."""

    def __init__(self, size: int = LOG_SIZE) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._by_id: dict[str, dict[str, Any]] = {}

    def add(self, entry: dict[str, Any]) -> None:
        """Record a new request, evicting the oldest once full."""
        if len(self._entries) == self._entries.maxlen:
            self._by_id.pop(self._entries[0]["sim_id"], None)
        self._entries.append(entry)
        self._by_id[entry["sim_id"]] = entry

    def get(self, sim_id: str) -> dict[str, Any] | None:
        """One entry by its ``sim_id`` (``chatcmpl-…``, or the bare native ``request_id``)."""
        return self._by_id.get(sim_id)

    def entries(self) -> list[dict[str, Any]]:
        """Snapshot of all entries, oldest first."""
        return [dict(entry) for entry in self._entries]

    def clear(self) -> int:
        """Forget everything; returns how many entries were dropped."""
        count = len(self._entries)
        self._entries.clear()
        self._by_id.clear()
        return count


@dataclass
class _Call:
    """Everything one chat request needs once its body has been validated."""

    request_id: str
    sim_id: str
    model: str
    messages: list[dict[str, Any]]
    opts: SimOptions
    stream: bool
    include_usage: bool
    max_tokens: int | None
    entry: dict[str, Any]
    protocol: str = "openai"
    result_format: str = "message"
    incremental: bool = True
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def rng_seed(self) -> str:
        return f"{self.model}|{prompt_of(self.messages)}|{self.opts.seed}"

    @property
    def reasoning_key(self) -> str | None:
        """The JSON key thinking travels under, or None (no thinking, or inline ``<think>``)."""
        if self.opts.think <= 0 or self.opts.reasoning_field == "think":
            return None
        return self.opts.reasoning_field

    @property
    def inline_think(self) -> bool:
        """Thinking goes into ``content`` between ``<think>`` tags (``reasoning_field=think``)."""
        return self.opts.think > 0 and self.opts.reasoning_field == "think"


@dataclass(frozen=True)
class _Plan:
    """The token pieces one request will produce, and how it ends if nothing cuts it short."""

    reasoning: list[str]
    answer: list[str]
    limit: int
    finish_reason: str

    @classmethod
    def of(cls, call: _Call) -> _Plan:
        """``max_tokens`` cuts the answer only; the thinking is not part of the answer budget."""
        answer = plan_answer(call.model, call.messages, call.opts)
        limit = len(answer) if call.max_tokens is None else min(len(answer), call.max_tokens)
        return cls(
            reasoning=plan_reasoning(call.model, call.messages, call.opts),
            answer=answer,
            limit=limit,
            finish_reason="length" if limit < len(answer) else "stop",
        )

    @property
    def total(self) -> int:
        return len(self.reasoning) + self.limit


@dataclass(frozen=True)
class _Piece:
    """One paced chunk: reasoning or answer text, never both."""

    reasoning: bool
    text: str
    count: int
    first_of_phase: bool
    last: bool
    """This chunk completes the plan and no fault follows: the response ends with it."""


def _shuffled(obj: Any, rng: random.Random) -> Any:
    """``obj`` with every object's keys in random order (clients must not rely on order)."""
    if isinstance(obj, dict):
        keys = list(obj)
        rng.shuffle(keys)
        return {key: _shuffled(obj[key], rng) for key in keys}
    if isinstance(obj, list):
        return [_shuffled(item, rng) for item in obj]
    return obj


class _Chunks:
    """Builds ``chat.completion.chunk`` JSON lines in the service's key orders."""

    # The two choice orders seen in the reference capture for content chunks.
    _CONTENT_ORDERS = (
        ("finish_reason", "delta", "index", "logprobs"),
        ("delta", "finish_reason", "index", "logprobs"),
    )

    def __init__(self, call: _Call, rng: random.Random) -> None:
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
        return _dumps(_shuffled(obj, self.rng) if self.call.opts.shuffle else obj)

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


class _Wire:
    """Writes response body bytes, optionally cut at random offsets and with CRLF endings.

    ``ping`` is the protocol's keep-alive comment: ``: keep-alive`` for compatible mode,
    ``:keepalive`` (as seen on Alibaba streams) for native.
    """

    def __init__(
        self, send: Send, opts: SimOptions, rng: random.Random, ping: str = ": keep-alive"
    ) -> None:
        self.send = send
        self.opts = opts
        self.rng = rng
        self.eol = "\r\n" if opts.crlf else "\n"
        self.ping = ping

    async def write(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if not self.opts.fragment:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
            return
        # Cut anywhere, including inside multi-byte UTF-8 characters and CR/LF pairs.
        pos = 0
        while pos < len(data):
            size = self.rng.randint(1, 24)
            piece = data[pos : pos + size]
            pos += size
            await self.send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)

    async def event(self, payload: str) -> None:
        # Keep-alive comments may also sit between an event's data line and its blank line.
        inner = ""
        if self.opts.keepalive and self.rng.random() < 0.05:
            inner = f"{self.ping}{self.eol}"
        await self.write(f"data: {payload}{self.eol}{inner}{self.eol}")

    async def frame(self, lines: Sequence[str]) -> None:
        """One native event: its lines, keep-alive comments between them if asked, blank line."""
        out: list[str] = []
        for line in lines:
            out.append(line + self.eol)
            if self.opts.keepalive and self.rng.random() < 0.1:
                out.append(self.ping + self.eol)
        out.append(self.eol)
        await self.write("".join(out))

    async def comment(self) -> None:
        await self.write(f"{self.ping}{self.eol}{self.eol}")

    async def close(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(
    send: Send, status: int, obj: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await _send_bytes(send, status, _dumps(obj).encode(), headers=headers)


async def _start_sse(
    send: Send, request_id: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Response start of a 200 event stream, the same headers for both protocols."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream;charset=UTF-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", request_id.encode()),
                *extra,
            ],
        }
    )


async def _read_body(receive: Receive) -> bytes | None:
    """The full request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _env_defaults() -> dict[str, Any]:
    """App-wide option defaults from ``SIM_OPTIONS`` and ``SIM_TTFT/TPS/TOKENS/SEED``."""
    raw: dict[str, Any] = parse_directive_string(os.environ.get("SIM_OPTIONS", ""))
    for key in ("ttft", "tps", "tokens", "seed"):
        value = os.environ.get(f"SIM_{key.upper()}", "").strip()
        if value:
            raw[key] = value
    return raw


def _new_entry(
    sim_id: str, request_id: str, protocol: str, scope: Scope | None = None
) -> dict[str, Any]:
    """A fresh log entry; the handlers fill it in as the request goes."""
    headers = dict((scope or {}).get("headers") or [])
    return {
        "sim_id": sim_id,
        "request_id": request_id,
        # The client's own id for the request (X-Request-Id), as a provider's logs keep it.
        "client_request_id": headers.get(b"x-request-id", b"").decode("latin-1") or None,
        "protocol": protocol,
        "model": None,
        "stream": False,
        "include_usage": False,
        "incremental": None,
        "result_format": None,
        "enable_thinking": None,
        "options": {},
        "messages": [],
        "started_at": time.time(),
        "first_token_at": None,
        "first_answer_at": None,
        "finished_at": None,
        "disconnected_at": None,
        "tokens_sent": 0,
        "reasoning_tokens_sent": 0,
        "text": "",
        "reasoning": "",
        "outcome": "streaming",
        "status": None,
        "attempt": None,
    }


async def _paced(
    call: _Call, plan: _Plan, wire: _Wire, rng: random.Random
) -> AsyncIterator[_Piece]:
    """Yield the plan's chunks against absolute monotonic deadlines, logging each once written.

    ``ttft`` passes before the first token (reasoning if the request thinks), then one token is
    due every ``1/tps`` seconds; tokens already due are coalesced, never across the switch from
    reasoning to answer. Faults that cut the response stop it after ``fault_after`` tokens.
    """
    opts, entry = call.opts, call.entry
    thinking = len(plan.reasoning)
    cut = min(plan.total, opts.fault_after) if opts.fault in _CUT_FAULTS else plan.total
    start = time.monotonic() + opts.ttft
    sent = 0
    while sent < cut:
        due = start + sent / opts.tps
        if sent == 0 and opts.keepalive:
            await _sleep_with_pings(due, wire)
        else:
            await _sleep_until(due)
        now = time.monotonic()
        is_reasoning = sent < thinking
        phase_end = min(thinking, cut) if is_reasoning else cut
        count = 1
        while (
            sent + count < phase_end
            and count < opts.coalesce
            and start + (sent + count) / opts.tps <= now
        ):
            count += 1
        if is_reasoning:
            text = "".join(plan.reasoning[sent : sent + count])
        else:
            text = "".join(plan.answer[sent - thinking : sent - thinking + count])
        if opts.stamp:
            text = f"⟦{time.time():.6f}⟧{text}"
        yield _Piece(
            reasoning=is_reasoning,
            text=text,
            count=count,
            first_of_phase=sent in (0, thinking),
            last=sent + count == plan.total and opts.fault not in _CUT_FAULTS,
        )
        sent += count
        now_epoch = time.time()
        if is_reasoning:
            entry["reasoning_tokens_sent"] += count
            entry["reasoning"] += text
        else:
            entry["tokens_sent"] += count
            entry["text"] += text
            if entry["first_answer_at"] is None:
                entry["first_answer_at"] = now_epoch
        if entry["first_token_at"] is None:
            entry["first_token_at"] = now_epoch
        if opts.keepalive and rng.random() < 0.1:
            await wire.comment()


class SimulatorApp:
    """The ASGI callable; one instance owns its request log and defaults."""

    def __init__(
        self,
        prefix: str = "",
        *,
        api_key: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        stream_only_models: Sequence[str] = DEFAULT_STREAM_ONLY_MODELS,
        thinking_models: Sequence[str] = DEFAULT_THINKING_MODELS,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.api_key = api_key
        self.defaults = parse_options(defaults or {})
        self.models = list(models)
        self.stream_only_models = [pattern.lower() for pattern in stream_only_models]
        self.thinking_models = [pattern.lower() for pattern in thinking_models]
        self.log = RequestLog()
        self.started = int(time.time())
        self._fault_counts: OrderedDict[str, int] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Runs once per server: nothing to set up, just acknowledge."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route_path(self, path: str) -> str | None:
        if not self.prefix:
            return path
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return path[len(self.prefix) :] or "/"
        return None

    def is_stream_only(self, model: str) -> bool:
        """True when ``model`` matches a stream-only pattern (case-insensitive)."""
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.stream_only_models)

    def is_thinking(self, model: str) -> bool:
        """True when ``model`` thinks by default (matches a thinking pattern, case-insensitive)."""
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.thinking_models)

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_key:
            return True
        headers = dict(scope.get("headers") or [])
        return headers.get(b"authorization", b"") == f"Bearer {self.api_key}".encode()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = self._route_path(scope["path"])
        path = path.rstrip("/") if path not in (None, "/") else path
        if method == "POST" and path == "/v1/chat/completions":
            await self._chat(scope, receive, send)
            return
        if method == "POST" and path == native.PATH:
            await self._native(scope, receive, send)
            return
        if method == "GET" and path == "/v1/models":
            await self._models(scope, send)
            return
        if path == "/_sim/requests" and method == "GET":
            await _send_json(send, 200, {"requests": self.log.entries()})
            return
        if path == "/_sim/requests" and method == "DELETE":
            self._fault_counts.clear()
            await _send_json(send, 200, {"cleared": self.log.clear()})
            return
        if path and path.startswith("/_sim/requests/") and method == "GET":
            entry = self.log.get(path.removeprefix("/_sim/requests/"))
            if entry is not None:
                await _send_json(send, 200, dict(entry))
                return
        message = f"Not found: {method} {scope['path']}"
        status, body = _error_body("404", str(uuid.uuid4()), message)
        await _send_bytes(send, status, body)

    async def _models(self, scope: Scope, send: Send) -> None:
        if not self._authorized(scope):
            status, body = _error_body("401", str(uuid.uuid4()))
            await _send_bytes(send, status, body)
            return
        data = [
            {"id": name, "object": "model", "created": self.started, "owned_by": "system"}
            for name in self.models
        ]
        await _send_json(send, 200, {"object": "list", "data": data})

    async def _run(self, call: _Call, send: Send, receive: Receive) -> None:
        """Answer a validated call (fault or generation) and record a client disconnect."""
        if call.opts.fault in HTTP_FAULTS:
            await self._http_fault(send, call)
            return
        disconnected_at = await _until_disconnect(self._respond(send, call), receive)
        if disconnected_at is not None:
            call.entry.update(
                outcome="disconnected", disconnected_at=disconnected_at, finished_at=time.time()
            )

    # ---------------------------------------------------------------------------------------
    # Chat completions (OpenAI-compatible)
    # ---------------------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return
        request_id = str(uuid.uuid4())
        entry = _new_entry(f"chatcmpl-{request_id}", request_id, "openai", scope)
        self.log.add(entry)

        async def reject(
            kind: str, message: str | None = None, *, response_id: str | None = None
        ) -> None:
            status, body = _error_body(kind, request_id, message, response_id=response_id)
            await _send_bytes(send, status, body, headers=[(b"x-request-id", request_id.encode())])
            entry.update(status=status, outcome=f"rejected:{status}", finished_at=time.time())

        if not self._authorized(scope):
            await reject("401")
            return
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            await reject(
                "400",
                f"{_INVALID_PARAMETER}Required body invalid, please check the "
                f"request body format. ({exc.__class__.__name__}: {exc})",
            )
            return
        problem = _validate(body)
        if problem:
            await reject("400", _INVALID_PARAMETER + problem)
            return
        enable_thinking: bool | None = body.get("enable_thinking")
        stream = bool(body.get("stream"))
        entry.update(
            model=body["model"],
            stream=stream,
            messages=body["messages"],
            enable_thinking=enable_thinking,
        )
        if not stream and self.is_stream_only(body["model"]):
            await reject("stream_only", response_id=entry["sim_id"])
            return
        if not stream and enable_thinking is True:
            await reject("thinking_non_stream", response_id=entry["sim_id"])
            return
        messages: list[dict[str, Any]] = body["messages"]
        stream_options = body.get("stream_options") or {}
        try:
            opts = resolve_options(
                body["model"],
                messages,
                body_seed=body.get("seed"),
                body_sim=body.get("sim"),
                defaults=self.defaults,
                thinking=self._thinks(body["model"], enable_thinking),
            )
        except SimOptionError as exc:
            await reject("400", _INVALID_PARAMETER + str(exc))
            return
        opts = self._count_attempt(messages, opts, entry)
        call = _Call(
            request_id=request_id,
            sim_id=entry["sim_id"],
            model=body["model"],
            messages=messages,
            opts=opts,
            stream=stream,
            include_usage=bool(
                isinstance(stream_options, dict) and stream_options.get("include_usage")
            ),
            max_tokens=body.get("max_tokens"),
            entry=entry,
        )
        entry.update(include_usage=call.include_usage, options=opts.as_dict())
        await self._run(call, send, receive)

    def _count_attempt(
        self, messages: Sequence[Mapping[str, Any]], opts: SimOptions, entry: dict[str, Any]
    ) -> SimOptions:
        """Apply ``fault_times``: the fault hits only the first N requests of the same message.

        Requests are counted per last user message (directives included) and the count is
        logged as ``attempt``; past N the options are the same without the fault.
        """
        if opts.fault is None or opts.fault_times <= 0:
            return opts
        key = last_user_text(messages)
        attempt = self._fault_counts.pop(key, 0) + 1
        self._fault_counts[key] = attempt
        while len(self._fault_counts) > FAULT_COUNTERS:
            self._fault_counts.popitem(last=False)
        entry["attempt"] = attempt
        if attempt > opts.fault_times:
            return dataclasses.replace(opts, fault=None)
        return opts

    def _thinks(self, model: str, enable_thinking: bool | None) -> bool:
        """Whether a request thinks before options: its explicit flag, else the model's default."""
        return self.is_thinking(model) if enable_thinking is None else enable_thinking

    def _fault_framing(self, call: _Call) -> str:
        """``http``, ``sse200`` or ``sse_status``: how this call's HTTP fault is delivered."""
        framing = call.opts.fault_framing
        if not call.stream:
            return "http"
        if framing == "auto":
            native_429 = call.protocol == "dashscope" and call.opts.fault == "429"
            return "sse200" if native_429 else "http"
        return framing

    async def _http_fault(self, send: Send, call: _Call) -> None:
        """An injected error before any generated byte, framed as ``fault_framing`` says."""
        fault = call.opts.fault or ""
        headers = [(b"x-request-id", call.request_id.encode())]
        if fault == "429" and call.opts.retry_after is not None:
            headers.append((b"retry-after", _format_seconds(call.opts.retry_after).encode()))
        if call.protocol == "dashscope":
            status, obj = native.error_object(fault, call.request_id)
            payload = _dumps(obj)
        else:
            status, body = _error_body(fault, call.request_id)
            payload = body.decode()
        framing = self._fault_framing(call)
        if framing == "http":
            await _send_bytes(send, status, payload.encode(), headers=headers)
            call.entry.update(status=status, outcome=f"fault:{fault}", finished_at=time.time())
            return
        wire = _Wire(send, call.opts, random.Random(call.rng_seed + "|wire"), self._ping(call))
        if call.protocol == "dashscope":
            event = "".join(
                line + wire.eol for line in native.frame_lines(1, "error", status, payload)
            )
        else:
            event = f"data: {payload}{wire.eol}"
        event += wire.eol
        sent_status = 200 if framing == "sse200" else status
        if framing == "sse200":
            await _start_sse(send, call.request_id, headers[1:])
        else:
            # The SSE-framed error body labelled as JSON, as some gateways send it.
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers],
                }
            )
        await wire.write(event)
        await wire.close()
        call.entry.update(status=sent_status, outcome=f"fault:{fault}", finished_at=time.time())

    @staticmethod
    def _ping(call: _Call) -> str:
        return ":keepalive" if call.protocol == "dashscope" else ": keep-alive"

    async def _respond(self, send: Send, call: _Call) -> None:
        if call.opts.fault == "slow_headers":
            await asyncio.sleep(call.opts.delay)
        if not call.stream:
            await self._complete(send, call)
        elif call.protocol == "dashscope":
            await self._native_stream(send, call)
        else:
            await self._stream(send, call)

    async def _stream(self, send: Send, call: _Call) -> None:
        """Stream the plan as compatible-mode SSE: role chunk, deltas, finish, usage, [DONE]."""
        opts, entry = call.opts, call.entry
        rng = random.Random(call.rng_seed + "|wire")
        chunks = _Chunks(call, rng)
        wire = _Wire(send, opts, rng)
        plan = _Plan.of(call)

        await _start_sse(send, call.request_id)
        entry["status"] = 200
        await wire.event(chunks.role())
        async with contextlib.aclosing(_paced(call, plan, wire, rng)) as pieces:
            async for piece in pieces:
                if call.inline_think:
                    # vLLM without a reasoning parser: the tags are part of the content.
                    prefix = ""
                    if piece.first_of_phase:
                        prefix = _THINK_OPEN if piece.reasoning else _THINK_CLOSE
                    await wire.event(chunks.content(prefix + piece.text))
                elif piece.reasoning:
                    await wire.event(chunks.reasoning(piece.text))
                else:
                    await wire.event(chunks.content(piece.text))

        if opts.fault == "eof":
            await wire.close()
        elif opts.fault == "midstream_error":
            await wire.event(_dumps(_midstream_error(opts.midstream_kind)))
            await wire.close()
        elif opts.fault == "stall":
            await _stall(wire)
            await wire.close()
        else:
            await wire.event(chunks.finish(plan.finish_reason))
            if call.include_usage:
                await wire.event(chunks.usage(entry["tokens_sent"], entry["reasoning_tokens_sent"]))
            await wire.event("[DONE]")
            await wire.close()
        faulted = opts.fault in _CUT_FAULTS
        entry.update(
            outcome=f"fault:{opts.fault}" if faulted else "complete", finished_at=time.time()
        )

    async def _complete(self, send: Send, call: _Call) -> None:
        """Non-streaming: wait as long as generation would take, then answer in one JSON body."""
        opts, entry = call.opts, call.entry
        plan = _Plan.of(call)
        headers = [(b"x-request-id", call.request_id.encode())]
        if opts.fault == "stall":
            await asyncio.sleep(STALL_MAX_SECONDS)
        else:
            await asyncio.sleep(opts.ttft + plan.total / opts.tps)
        if opts.fault in {"stall", "midstream_error"}:
            if call.protocol == "dashscope":
                kind = "timeout" if opts.fault == "stall" else opts.midstream_kind
                status, obj = native.error_object(kind, call.request_id)
                body = _dumps(obj).encode()
            elif opts.fault == "stall":
                status, body = _error_body("500", call.request_id, "Response timeout!")
            else:
                status, body = _error_body(opts.midstream_kind, call.request_id)
            await _send_bytes(send, status, body, headers=headers)
            entry.update(status=status, outcome=f"fault:{opts.fault}", finished_at=time.time())
            return
        text = "".join(plan.answer[: plan.limit])
        reasoning = "".join(plan.reasoning)
        if opts.stamp:
            text = f"⟦{time.time():.6f}⟧{text}"
        content = f"{_THINK_OPEN}{reasoning}{_THINK_CLOSE}{text}" if call.inline_think else text
        thinking_tokens = len(plan.reasoning)
        if call.protocol == "dashscope":
            events = native.NativeEvents(
                call.request_id,
                result_format=call.result_format,
                incremental=True,
                reasoning_key=call.reasoning_key,
                input_tokens=estimate_prompt_tokens(call.messages),
            )
            obj: dict[str, Any] = events.complete(
                content, reasoning, plan.finish_reason, plan.total, thinking_tokens
            )
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if call.reasoning_key is not None:
                message[call.reasoning_key] = reasoning
            obj = {
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
                    call.messages, plan.limit, thinking_tokens if opts.think > 0 else None
                ),
                "created": call.created,
                "system_fingerprint": None,
                "model": call.model,
                "id": call.sim_id,
            }
        data = _dumps(obj).encode()
        wire = _Wire(send, opts, random.Random(call.rng_seed + "|wire"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), *headers],
            }
        )
        if opts.fault == "eof":
            # Chunked body cut in half: the client gets a clean EOF and unparseable JSON.
            await wire.write(data[: len(data) // 2])
            await wire.close()
            entry.update(status=200, outcome="fault:eof", finished_at=time.time())
            return
        await wire.write(data)
        await wire.close()
        now = time.time()
        entry.update(
            status=200,
            tokens_sent=plan.limit,
            reasoning_tokens_sent=thinking_tokens,
            text=text,
            reasoning=reasoning,
            first_token_at=now,
            first_answer_at=now,
            finished_at=now,
            outcome="complete",
        )

    # ---------------------------------------------------------------------------------------
    # DashScope native text generation
    # ---------------------------------------------------------------------------------------

    async def _native(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return
        request_id = str(uuid.uuid4())
        entry = _new_entry(request_id, request_id, "dashscope", scope)
        headers = dict(scope.get("headers") or [])
        sse = headers.get(b"x-dashscope-sse", b"").strip().lower() == b"enable"
        entry.update(stream=sse, include_usage=True)
        self.log.add(entry)

        async def reject(kind: str, message: str | None = None) -> None:
            status, obj = native.error_object(kind, request_id, message)
            await _send_json(send, status, obj, headers=[(b"x-request-id", request_id.encode())])
            entry.update(status=status, outcome=f"rejected:{status}", finished_at=time.time())

        if not self._authorized(scope):
            await reject("401")
            return
        try:
            request = native.parse_request(json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            await reject(
                "invalid",
                f"{_INVALID_PARAMETER}Required body invalid, please check the "
                f"request body format. ({exc.__class__.__name__}: {exc})",
            )
            return
        except native.NativeRequestError as exc:
            await reject("invalid", str(exc))
            return
        model_thinks = self.is_thinking(request.model)
        # Text is the legacy default; models that think (Qwen3, QwQ) only speak "message".
        result_format = request.result_format or ("message" if model_thinks else "text")
        entry.update(
            model=request.model,
            messages=request.messages,
            incremental=request.incremental,
            result_format=result_format,
            enable_thinking=request.enable_thinking,
        )
        if not sse and self.is_stream_only(request.model):
            await reject("stream_only")
            return
        if not sse and request.enable_thinking is True:
            await reject("invalid", native.THINKING_NON_STREAM)
            return
        try:
            opts = resolve_options(
                request.model,
                request.messages,
                body_seed=request.seed,
                body_sim=request.sim,
                defaults=self.defaults,
                thinking=self._thinks(request.model, request.enable_thinking),
            )
        except SimOptionError as exc:
            await reject("invalid", _INVALID_PARAMETER + str(exc))
            return
        opts = self._count_attempt(request.messages, opts, entry)
        entry["options"] = opts.as_dict()
        if opts.think > 0 and result_format == "text":
            await reject("invalid", native.THINKING_RESULT_FORMAT)
            return
        if opts.think > 0 and sse and not request.incremental:
            await reject("invalid", native.THINKING_INCREMENTAL)
            return
        call = _Call(
            request_id=request_id,
            sim_id=request_id,
            model=request.model,
            messages=request.messages,
            opts=opts,
            stream=sse,
            include_usage=True,
            max_tokens=request.max_tokens,
            entry=entry,
            protocol="dashscope",
            result_format=result_format,
            incremental=request.incremental,
        )
        await self._run(call, send, receive)

    async def _native_stream(self, send: Send, call: _Call) -> None:
        """Stream the plan as native SSE events; the connection closes after the last one."""
        opts, entry = call.opts, call.entry
        rng = random.Random(call.rng_seed + "|wire")
        wire = _Wire(send, opts, rng, self._ping(call))
        plan = _Plan.of(call)
        events = native.NativeEvents(
            call.request_id,
            result_format=call.result_format,
            incremental=call.incremental,
            reasoning_key=call.reasoning_key,
            input_tokens=estimate_prompt_tokens(call.messages),
        )
        event_id = 0
        output_tokens = reasoning_tokens = 0

        async def emit(kind: str, status: int, obj: Mapping[str, Any]) -> None:
            nonlocal event_id
            event_id += 1
            body = _shuffled(obj, rng) if opts.shuffle else obj
            await wire.frame(native.frame_lines(event_id, kind, status, _dumps(body)))

        await _start_sse(send, call.request_id)
        entry["status"] = 200
        async with contextlib.aclosing(_paced(call, plan, wire, rng)) as pieces:
            async for piece in pieces:
                output_tokens += piece.count
                finish = "null"
                if piece.last and not opts.final_empty:
                    finish = plan.finish_reason
                if piece.reasoning and not call.inline_think:
                    reasoning_tokens += piece.count
                    obj = events.result(
                        reasoning=piece.text,
                        finish_reason=finish,
                        output_tokens=output_tokens,
                        reasoning_tokens=reasoning_tokens,
                    )
                else:
                    if piece.reasoning:
                        reasoning_tokens += piece.count
                    text = piece.text
                    if call.inline_think and piece.first_of_phase:
                        text = (_THINK_OPEN if piece.reasoning else _THINK_CLOSE) + text
                    obj = events.result(
                        content=text,
                        finish_reason=finish,
                        output_tokens=output_tokens,
                        reasoning_tokens=reasoning_tokens,
                    )
                await emit("result", 200, obj)

        if opts.fault == "midstream_error":
            status, error = native.error_object(opts.midstream_kind, call.request_id)
            await emit("error", status, error)
        elif opts.fault == "stall":
            await _stall(wire)
        elif opts.fault != "eof" and opts.final_empty:
            await emit(
                "result",
                200,
                events.result(
                    finish_reason=plan.finish_reason,
                    output_tokens=output_tokens,
                    reasoning_tokens=reasoning_tokens,
                ),
            )
        await wire.close()
        faulted = opts.fault in _CUT_FAULTS
        entry.update(
            outcome=f"fault:{opts.fault}" if faulted else "complete", finished_at=time.time()
        )


def _validate(body: Any) -> str | None:
    """Why a chat request body is unacceptable, or None when it is fine."""
    if not isinstance(body, dict):
        return "Required body invalid, please check the request body format."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "Model not specified."
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and "role" in m for m in messages)
    ):
        return "Input should be a non-empty list of messages with a role."
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 8192
    ):
        return "Range of max_tokens should be [1, 8192]"
    if body.get("enable_thinking") is not None and not isinstance(body["enable_thinking"], bool):
        return "enable_thinking should be a boolean."
    return None


async def _sleep_until(deadline: float) -> None:
    # Always yield: Daphne's send never suspends, so a stream that is behind schedule would
    # otherwise hog the loop and hide the client's disconnect.
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _sleep_with_pings(deadline: float, wire: _Wire, every: float = 0.1) -> None:
    """Wait for the first token while sending ``: keep-alive`` comments every ``every`` s."""
    next_ping = time.monotonic() + every
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= next_ping:
            await wire.comment()
            next_ping += every
            continue
        await asyncio.sleep(min(deadline, next_ping) - now)


async def _stall(wire: _Wire) -> None:
    """Send nothing more for ``STALL_MAX_SECONDS``; with ``keepalive``, nothing but pings."""
    if wire.opts.keepalive:
        await _sleep_with_pings(time.monotonic() + STALL_MAX_SECONDS, wire)
    else:
        await asyncio.sleep(STALL_MAX_SECONDS)


async def _until_disconnect(work: Awaitable[None], receive: Receive) -> float | None:
    """Run ``work`` until it ends or the client disconnects; return the disconnect epoch if so.

    The simulator must notice a disconnect while it is sleeping between tokens, which is how
    tests prove the app's Stop button cancels the upstream request.
    """

    async def watch() -> float:
        while (await receive())["type"] != "http.disconnect":
            pass
        return time.time()

    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            # Finishing the response makes Daphne queue http.disconnect too: the job wins.
            job.result()
            return None
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        return watcher.result()
    finally:
        for task in (job, watcher):
            if not task.done():
                task.cancel()


def make_app(
    prefix: str = "",
    *,
    api_key: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    models: Sequence[str] | None = None,
    stream_only_models: str | Sequence[str] | None = None,
    thinking_models: str | Sequence[str] | None = None,
) -> SimulatorApp:
    """Build the simulator ASGI app.

    ``defaults`` are option defaults on top of the ``SIM_*`` environment variables; ``api_key``
    falls back to ``SIM_API_KEY`` (unset: any key, or none, is accepted); ``models`` falls back
    to ``SIM_MODELS`` (comma-separated) and then to ``DEFAULT_MODELS``.

    ``stream_only_models`` (shell-style patterns, a list or one comma-separated string) falls
    back to ``SIM_STREAM_ONLY_MODELS`` and, when that is unset, to
    ``DEFAULT_STREAM_ONLY_MODELS``; an empty value makes no model stream-only.
    ``thinking_models`` works the same way with ``SIM_THINKING_MODELS`` and
    ``DEFAULT_THINKING_MODELS``; an empty value makes no model think unless asked.
    """
    merged = {**_env_defaults(), **(defaults or {})}
    if api_key is None:
        api_key = os.environ.get("SIM_API_KEY") or None
    if models is None:
        env_models = [m.strip() for m in os.environ.get("SIM_MODELS", "").split(",") if m.strip()]
        models = env_models or DEFAULT_MODELS
    if stream_only_models is None:
        env_patterns = os.environ.get("SIM_STREAM_ONLY_MODELS")
        stream_only_models = (
            DEFAULT_STREAM_ONLY_MODELS if env_patterns is None else _parse_patterns(env_patterns)
        )
    elif isinstance(stream_only_models, str):
        stream_only_models = _parse_patterns(stream_only_models)
    if thinking_models is None:
        env_thinking = os.environ.get("SIM_THINKING_MODELS")
        thinking_models = (
            DEFAULT_THINKING_MODELS if env_thinking is None else _parse_patterns(env_thinking)
        )
    elif isinstance(thinking_models, str):
        thinking_models = _parse_patterns(thinking_models)
    return SimulatorApp(
        prefix,
        api_key=api_key,
        defaults=merged,
        models=models,
        stream_only_models=stream_only_models,
        thinking_models=thinking_models,
    )


application = make_app(os.environ.get("SIM_PREFIX", ""))
