"""The simulator as a plain ASGI 3 application (no framework, so it mounts anywhere).

Routes, all below an optional ``prefix`` (e.g. ``/simulator`` when mounted inside the Django
ASGI router):

- ``POST /v1/chat/completions``: OpenAI-compatible chat completions, streamed or not.
- ``POST /api/v1/services/aigc/text-generation/generation``: DashScope's native protocol, SSE
  with the ``X-DashScope-SSE: enable`` header, one JSON body without it (see
  ``simulator.native``).
- ``POST /api/v1/services/aigc/multimodal-generation/generation``: the same, for requests with
  images (content parts in, ``[{"text": …}]`` out). Images sent to a model whose name does not
  say it sees ("vl", "vision", "omni", "4o") are refused in each protocol's words; a vision
  model's answer begins by saying what it received (``simulator.images``).
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

This module only routes and holds the app-wide settings; the work is done by ``intake`` (body,
auth, options: once for both protocols), ``reply`` with ``compatible`` and ``dashscope`` (the
two wire formats, streamed or whole), ``pacing`` and ``wire`` (token timing and bytes),
``faults`` (HTTP faults, ``fault_times``) and ``log`` (the request log).
"""

from __future__ import annotations

import fnmatch
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from simulator import intake, native, reply
from simulator.compatible import error_body
from simulator.faults import Attempts
from simulator.log import RequestLog
from simulator.options import parse_options
from simulator.prompt import parse_directive_string
from simulator.wire import ASGIApp, Receive, Scope, Send, send_bytes, send_json

__all__ = ["ASGIApp", "RequestLog", "SimulatorApp", "application", "make_app"]

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


class SimulatorApp:
    """The ASGI callable; one instance owns its request log, fault counters and defaults."""

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
        self.attempts = Attempts()
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

    def is_thinking(self, model: str) -> bool:
        """True when ``model`` thinks by default (matches a thinking pattern, case-insensitive)."""
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.thinking_models)

    def thinks(self, model: str, enable_thinking: bool | None) -> bool:
        """Whether a request thinks before options: its explicit flag, else the model's default."""
        return self.is_thinking(model) if enable_thinking is None else enable_thinking

    def authorized(self, scope: Scope) -> bool:
        """True when no key is required or the request carries ``Bearer <api_key>``."""
        if not self.api_key:
            return True
        headers = dict(scope.get("headers") or [])
        return headers.get(b"authorization", b"") == f"Bearer {self.api_key}".encode()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = self._route_path(scope["path"])
        path = path.rstrip("/") if path not in (None, "/") else path
        if method == "POST" and path == "/v1/chat/completions":
            await self._generate(intake.COMPATIBLE, scope, receive, send)
            return
        if method == "POST" and path in (native.PATH, native.MULTIMODAL_PATH):
            await self._generate(intake.NATIVE, scope, receive, send)
            return
        if method == "GET" and path == "/v1/models":
            await self._models(scope, send)
            return
        if path == "/_sim/requests" and method == "GET":
            await send_json(send, 200, {"requests": self.log.entries()})
            return
        if path == "/_sim/requests" and method == "DELETE":
            self.attempts.clear()
            await send_json(send, 200, {"cleared": self.log.clear()})
            return
        if path and path.startswith("/_sim/requests/") and method == "GET":
            entry = self.log.get(path.removeprefix("/_sim/requests/"))
            if entry is not None:
                await send_json(send, 200, dict(entry))
                return
        message = f"Not found: {method} {scope['path']}"
        status, body = error_body("404", str(uuid.uuid4()), message)
        await send_bytes(send, status, body)

    async def _generate(
        self, dialect: intake.Dialect, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A chat request in either protocol: the intake accepts it, then the reply answers."""
        call = await intake.take(self, dialect, scope, receive, send)
        if call is not None:
            await reply.run(call, send, receive)

    async def _models(self, scope: Scope, send: Send) -> None:
        if not self.authorized(scope):
            status, body = error_body("401", str(uuid.uuid4()))
            await send_bytes(send, status, body)
            return
        data = [
            {"id": name, "object": "model", "created": self.started, "owned_by": "system"}
            for name in self.models
        ]
        await send_json(send, 200, {"object": "list", "data": data})


def _parse_patterns(text: str) -> list[str]:
    """Comma-separated patterns, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _env_defaults() -> dict[str, Any]:
    """App-wide option defaults from ``SIM_OPTIONS`` and ``SIM_TTFT/TPS/TOKENS/SEED``."""
    raw: dict[str, Any] = parse_directive_string(os.environ.get("SIM_OPTIONS", ""))
    for key in ("ttft", "tps", "tokens", "seed"):
        value = os.environ.get(f"SIM_{key.upper()}", "").strip()
        if value:
            raw[key] = value
    return raw


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
