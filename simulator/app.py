"""The simulator as a plain ASGI 3 application (no framework, so it mounts anywhere).

Routes, all below an optional ``prefix`` (e.g. ``/simulator`` when mounted inside the Django
ASGI router):

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions, streamed or not.
- ``GET  /v1/models``: OpenAI model list.
- ``GET  /_sim/requests`` and ``/_sim/requests/{sim_id}``: the in-memory request log that tests
  use to see what the upstream observed (text sent, disconnects). ``DELETE /_sim/requests``
  clears it.

Stream-only models (QwQ, Qwen3 open-source, … per the reference's "Parameter rules") answer a
``stream: false`` call with DashScope's 400 ``invalid_parameter_error``; which models count is
set by shell-style patterns (``SIM_STREAM_ONLY_MODELS`` / ``stream_only_models``).

The streaming wire format copies the DashScope compatible-mode capture in
``../shared/reference/protocols.md`` (a): compact JSON with raw UTF-8, a role-only first
chunk, coalesced deltas when behind schedule, a finish chunk with ``content: ""``, the optional
``choices: []`` usage chunk and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.script import (
    HTTP_FAULTS,
    SimOptionError,
    SimOptions,
    estimate_prompt_tokens,
    parse_directive_string,
    parse_options,
    plan_answer,
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
STALL_MAX_SECONDS = 600.0
LOG_SIZE = 1000

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
}
_MIDSTREAM_ERROR = {
    "error": {
        "message": "Output data may contain inappropriate content.",
        "type": "data_inspection_failed",
        "param": None,
        "code": "data_inspection_failed",
    }
}
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
        """One entry by its ``chatcmpl-…`` id."""
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
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def rng_seed(self) -> str:
        return f"{self.model}|{prompt_of(self.messages)}|{self.opts.seed}"


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

    def _shuffled(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            keys = list(obj)
            self.rng.shuffle(keys)
            return {key: self._shuffled(obj[key]) for key in keys}
        if isinstance(obj, list):
            return [self._shuffled(item) for item in obj]
        return obj

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> str:
        obj = {
            "choices": choices,
            "object": "chat.completion.chunk",
            "usage": usage,
            "created": self.call.created,
            "system_fingerprint": None,
            "model": self.call.model,
            "id": self.call.sim_id,
        }
        return _dumps(self._shuffled(obj) if self.call.opts.shuffle else obj)

    def role(self) -> str:
        choice = {
            "delta": {"content": "", "role": "assistant"},
            "index": 0,
            "logprobs": None,
            "finish_reason": None,
        }
        return self._envelope([choice], None)

    def content(self, text: str) -> str:
        values = {"finish_reason": None, "delta": {"content": text}, "index": 0, "logprobs": None}
        order = self.rng.choice(self._CONTENT_ORDERS)
        return self._envelope([{key: values[key] for key in order}], None)

    def finish(self, reason: str) -> str:
        choice = {"finish_reason": reason, "delta": {"content": ""}, "index": 0, "logprobs": None}
        return self._envelope([choice], None)

    def usage(self, completion_tokens: int) -> str:
        return self._envelope([], _usage(self.call.messages, completion_tokens))


def _usage(messages: Sequence[Mapping[str, Any]], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = estimate_prompt_tokens(messages)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _Wire:
    """Writes response body bytes, optionally cut at random offsets and with CRLF endings."""

    def __init__(self, send: Send, opts: SimOptions, rng: random.Random) -> None:
        self.send = send
        self.opts = opts
        self.rng = rng
        self.eol = "\r\n" if opts.crlf else "\n"

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
            inner = f": keep-alive{self.eol}"
        await self.write(f"data: {payload}{self.eol}{inner}{self.eol}")

    async def comment(self) -> None:
        await self.write(f": keep-alive{self.eol}{self.eol}")

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
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.api_key = api_key
        self.defaults = parse_options(defaults or {})
        self.models = list(models)
        self.stream_only_models = [pattern.lower() for pattern in stream_only_models]
        self.log = RequestLog()
        self.started = int(time.time())

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
        if method == "GET" and path == "/v1/models":
            await self._models(scope, send)
            return
        if path == "/_sim/requests" and method == "GET":
            await _send_json(send, 200, {"requests": self.log.entries()})
            return
        if path == "/_sim/requests" and method == "DELETE":
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

    # ---------------------------------------------------------------------------------------
    # Chat completions
    # ---------------------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return
        request_id = str(uuid.uuid4())
        entry: dict[str, Any] = {
            "sim_id": f"chatcmpl-{request_id}",
            "model": None,
            "stream": False,
            "include_usage": False,
            "options": {},
            "messages": [],
            "started_at": time.time(),
            "first_token_at": None,
            "finished_at": None,
            "disconnected_at": None,
            "tokens_sent": 0,
            "text": "",
            "outcome": "streaming",
            "status": None,
        }
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
        if not body.get("stream") and self.is_stream_only(body["model"]):
            entry.update(model=body["model"], stream=False, messages=body["messages"])
            await reject("stream_only", response_id=entry["sim_id"])
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
            )
        except SimOptionError as exc:
            await reject("400", _INVALID_PARAMETER + str(exc))
            return
        call = _Call(
            request_id=request_id,
            sim_id=entry["sim_id"],
            model=body["model"],
            messages=messages,
            opts=opts,
            stream=bool(body.get("stream")),
            include_usage=bool(
                isinstance(stream_options, dict) and stream_options.get("include_usage")
            ),
            max_tokens=body.get("max_tokens"),
            entry=entry,
        )
        entry.update(
            model=call.model,
            stream=call.stream,
            include_usage=call.include_usage,
            options=opts.as_dict(),
            messages=messages,
        )
        if opts.fault in HTTP_FAULTS:
            await self._http_fault(send, call)
            return
        disconnected_at = await _until_disconnect(self._respond(send, call), receive)
        if disconnected_at is not None:
            entry.update(
                outcome="disconnected", disconnected_at=disconnected_at, finished_at=time.time()
            )

    async def _http_fault(self, send: Send, call: _Call) -> None:
        """An injected error status, sent before any stream byte."""
        fault = call.opts.fault or ""
        status, body = _error_body(fault, call.request_id)
        headers = [(b"x-request-id", call.request_id.encode())]
        if fault == "429" and call.opts.retry_after is not None:
            headers.append((b"retry-after", _format_seconds(call.opts.retry_after).encode()))
        await _send_bytes(send, status, body, headers=headers)
        call.entry.update(status=status, outcome=f"fault:{fault}", finished_at=time.time())

    async def _respond(self, send: Send, call: _Call) -> None:
        if call.opts.fault == "slow_headers":
            await asyncio.sleep(call.opts.delay)
        if call.stream:
            await self._stream(send, call)
        else:
            await self._complete(send, call)

    async def _stream(self, send: Send, call: _Call) -> None:
        """Stream the planned answer as SSE, paced against absolute monotonic deadlines."""
        opts, entry = call.opts, call.entry
        rng = random.Random(call.rng_seed + "|wire")
        chunks = _Chunks(call, rng)
        wire = _Wire(send, opts, rng)
        plan = plan_answer(call.model, call.messages, opts)
        limit = len(plan) if call.max_tokens is None else min(len(plan), call.max_tokens)
        finish_reason = "length" if limit < len(plan) else "stop"
        if opts.fault in {"eof", "midstream_error", "stall"}:
            limit = min(limit, opts.fault_after)

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream;charset=UTF-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", call.request_id.encode()),
                ],
            }
        )
        entry["status"] = 200
        await wire.event(chunks.role())
        start = time.monotonic() + opts.ttft
        sent = 0
        while sent < limit:
            due = start + sent / opts.tps
            if sent == 0 and opts.keepalive:
                await _sleep_with_pings(due, wire)
            else:
                await _sleep_until(due)
            now = time.monotonic()
            count = 1
            while (
                sent + count < limit
                and count < opts.coalesce
                and start + (sent + count) / opts.tps <= now
            ):
                count += 1
            text = "".join(plan[sent : sent + count])
            if opts.stamp:
                text = f"⟦{time.time():.6f}⟧{text}"
            await wire.event(chunks.content(text))
            sent += count
            entry["tokens_sent"] = sent
            entry["text"] += text
            if entry["first_token_at"] is None:
                entry["first_token_at"] = time.time()
            if opts.keepalive and rng.random() < 0.1:
                await wire.comment()

        if opts.fault == "eof":
            await wire.close()
        elif opts.fault == "midstream_error":
            await wire.event(_dumps(_MIDSTREAM_ERROR))
            await wire.close()
        elif opts.fault == "stall":
            await asyncio.sleep(STALL_MAX_SECONDS)
            await wire.close()
        else:
            await wire.event(chunks.finish(finish_reason))
            if call.include_usage:
                await wire.event(chunks.usage(sent))
            await wire.event("[DONE]")
            await wire.close()
        faulted = opts.fault in {"eof", "midstream_error", "stall"}
        entry.update(
            outcome=f"fault:{opts.fault}" if faulted else "complete", finished_at=time.time()
        )

    async def _complete(self, send: Send, call: _Call) -> None:
        """Non-streaming: wait as long as generation would take, then answer in one JSON body."""
        opts, entry = call.opts, call.entry
        plan = plan_answer(call.model, call.messages, opts)
        limit = len(plan) if call.max_tokens is None else min(len(plan), call.max_tokens)
        finish_reason = "length" if limit < len(plan) else "stop"
        headers = [(b"x-request-id", call.request_id.encode())]
        if opts.fault == "stall":
            await asyncio.sleep(STALL_MAX_SECONDS)
        else:
            await asyncio.sleep(opts.ttft + limit / opts.tps)
        if opts.fault == "stall":
            status, body = _error_body("500", call.request_id, "Response timeout!")
            await _send_bytes(send, status, body, headers=headers)
            entry.update(status=status, outcome="fault:stall", finished_at=time.time())
            return
        if opts.fault == "midstream_error":
            status, body = _error_body("data_inspection_failed", call.request_id)
            await _send_bytes(send, status, body, headers=headers)
            entry.update(status=status, outcome="fault:midstream_error", finished_at=time.time())
            return
        text = "".join(plan[:limit])
        if opts.stamp:
            text = f"⟦{time.time():.6f}⟧{text}"
        obj = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "object": "chat.completion",
            "usage": _usage(call.messages, limit),
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
            tokens_sent=limit,
            text=text,
            first_token_at=now,
            finished_at=now,
            outcome="complete",
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
) -> SimulatorApp:
    """Build the simulator ASGI app.

    ``defaults`` are option defaults on top of the ``SIM_*`` environment variables; ``api_key``
    falls back to ``SIM_API_KEY`` (unset: any key, or none, is accepted); ``models`` falls back
    to ``SIM_MODELS`` (comma-separated) and then to ``DEFAULT_MODELS``.

    ``stream_only_models`` (shell-style patterns, a list or one comma-separated string) falls
    back to ``SIM_STREAM_ONLY_MODELS`` and, when that is unset, to
    ``DEFAULT_STREAM_ONLY_MODELS``; an empty value makes no model stream-only.
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
    return SimulatorApp(
        prefix,
        api_key=api_key,
        defaults=merged,
        models=models,
        stream_only_models=stream_only_models,
    )


application = make_app(os.environ.get("SIM_PREFIX", ""))
