"""The request intake, once for both protocols: body, auth, validation, options, or a 400.

``take`` reads the body, logs the request, checks the key, parses the body in the protocol's
terms (``Compatible`` or ``Native``), refuses what the real service refuses, resolves the
``sim`` options and counts ``fault_times`` attempts; the result is a ``Call`` ready to answer,
or None once the refusal has been sent. The dialects hold only what differs: body shape, error
shape, what the log learns when, and the native-only thinking rules.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator import images, native
from simulator.call import Call
from simulator.compatible import INVALID_PARAMETER, error_body
from simulator.log import new_entry
from simulator.options import SimOptionError, SimOptions, resolve_options
from simulator.wire import Receive, Scope, Send, dumps, read_body, send_bytes

if TYPE_CHECKING:
    from simulator.app import SimulatorApp

__all__ = ["COMPATIBLE", "NATIVE", "Compatible", "Dialect", "Native", "Rejected", "Request", "take"]


class Rejected(Exception):
    """A request refused before anything is generated: an error kind of the protocol's table."""

    def __init__(
        self, kind: str, message: str | None = None, *, response_id: str | None = None
    ) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message
        self.response_id = response_id


@dataclass(frozen=True)
class Request:
    """A chat request in the terms both protocols share, once its body has been validated."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    enable_thinking: bool | None
    seed: Any
    sim: Any
    max_tokens: int | None
    include_usage: bool
    result_format: str = "message"
    incremental: bool = True
    multimodal: bool = False


class Dialect:
    """What differs between the protocols' intake; ``take`` is the flow they share."""

    name: str
    invalid: str
    """The error kind of a body the service cannot use."""

    def sim_id(self, request_id: str) -> str:
        return request_id

    def opening(self, scope: Scope) -> dict[str, Any]:
        """Log fields known before the body is read."""
        return {}

    def parse(self, body: Any, scope: Scope, app: SimulatorApp) -> Request:
        raise NotImplementedError

    def logged(self, request: Request) -> dict[str, Any]:
        """Log fields learnt from a valid body."""
        raise NotImplementedError

    def check(self, request: Request, opts: SimOptions) -> None:
        """Refusals that depend on the resolved options; none by default."""

    def error(
        self, kind: str, request_id: str, message: str | None, response_id: str | None
    ) -> tuple[int, bytes]:
        raise NotImplementedError


class Compatible(Dialect):
    """OpenAI-compatible ``/v1/chat/completions``: ``stream`` in the body, OpenAI errors."""

    name = "openai"
    invalid = "400"

    def sim_id(self, request_id: str) -> str:
        return f"chatcmpl-{request_id}"

    def parse(self, body: Any, scope: Scope, app: SimulatorApp) -> Request:
        problem = _validate(body)
        if problem:
            raise Rejected("400", INVALID_PARAMETER + problem)
        stream_options = body.get("stream_options") or {}
        return Request(
            model=body["model"],
            messages=body["messages"],
            stream=bool(body.get("stream")),
            enable_thinking=body.get("enable_thinking"),
            seed=body.get("seed"),
            sim=body.get("sim"),
            max_tokens=body.get("max_tokens"),
            include_usage=bool(
                isinstance(stream_options, dict) and stream_options.get("include_usage")
            ),
        )

    def logged(self, request: Request) -> dict[str, Any]:
        return {
            "model": request.model,
            "stream": request.stream,
            "messages": request.messages,
            "enable_thinking": request.enable_thinking,
        }

    def error(
        self, kind: str, request_id: str, message: str | None, response_id: str | None
    ) -> tuple[int, bytes]:
        return error_body(kind, request_id, message, response_id=response_id)


class Native(Dialect):
    """DashScope's native generation route: SSE by header, ``parameters``, native errors."""

    name = "dashscope"
    invalid = "invalid"

    @staticmethod
    def _sse(scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        return headers.get(b"x-dashscope-sse", b"").strip().lower() == b"enable"

    def opening(self, scope: Scope) -> dict[str, Any]:
        return {"stream": self._sse(scope), "include_usage": True}

    def parse(self, body: Any, scope: Scope, app: SimulatorApp) -> Request:
        try:
            request = native.parse_request(body)
        except native.NativeRequestError as exc:
            raise Rejected("invalid", str(exc)) from exc
        # Text is the legacy default; models that think (Qwen3, QwQ) only speak "message".
        model_thinks = app.is_thinking(request.model)
        multimodal = str(scope.get("path", "")).endswith(native.MULTIMODAL_PATH)
        if images.has_images(request.messages) and not multimodal:
            raise Rejected("invalid", images.NATIVE_TEXT_ONLY)
        return Request(
            model=request.model,
            messages=request.messages,
            stream=self._sse(scope),
            enable_thinking=request.enable_thinking,
            seed=request.seed,
            sim=request.sim,
            max_tokens=request.max_tokens,
            include_usage=True,
            result_format=request.result_format or ("message" if model_thinks else "text"),
            incremental=request.incremental,
            multimodal=multimodal,
        )

    def logged(self, request: Request) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": request.messages,
            "incremental": request.incremental,
            "result_format": request.result_format,
            "enable_thinking": request.enable_thinking,
        }

    def check(self, request: Request, opts: SimOptions) -> None:
        if opts.think > 0 and request.result_format == "text":
            raise Rejected("invalid", native.THINKING_RESULT_FORMAT)
        if opts.think > 0 and request.stream and not request.incremental:
            raise Rejected("invalid", native.THINKING_INCREMENTAL)

    def error(
        self, kind: str, request_id: str, message: str | None, response_id: str | None
    ) -> tuple[int, bytes]:
        status, obj = native.error_object(kind, request_id, message)
        return status, dumps(obj).encode()


COMPATIBLE = Compatible()
NATIVE = Native()


async def take(
    app: SimulatorApp, dialect: Dialect, scope: Scope, receive: Receive, send: Send
) -> Call | None:
    """The accepted call, or None when the client left or the refusal has been sent."""
    raw = await read_body(receive)
    if raw is None:
        return None
    request_id = str(uuid.uuid4())
    entry = new_entry(dialect.sim_id(request_id), request_id, dialect.name, scope)
    entry.update(dialect.opening(scope))
    app.log.add(entry)
    try:
        return _accept(app, dialect, scope, raw, entry)
    except Rejected as refusal:
        status, body = dialect.error(refusal.kind, request_id, refusal.message, refusal.response_id)
        await send_bytes(send, status, body, headers=[(b"x-request-id", request_id.encode())])
        entry.update(status=status, outcome=f"rejected:{status}", finished_at=time.time())
        return None


def _accept(
    app: SimulatorApp, dialect: Dialect, scope: Scope, raw: bytes, entry: dict[str, Any]
) -> Call:
    """Check the request in the service's order; ``Rejected`` at the first thing it refuses."""
    if not app.authorized(scope):
        raise Rejected("401")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(
            dialect.invalid,
            f"{INVALID_PARAMETER}Required body invalid, please check the "
            f"request body format. ({exc.__class__.__name__}: {exc})",
        ) from exc
    request = dialect.parse(body, scope, app)
    entry.update(dialect.logged(request))
    if images.has_images(request.messages) and not images.is_vision(request.model):
        raise Rejected("no_vision")
    # Whole (non-streaming) answers are refused to stream-only models and to thinking.
    if not request.stream and app.is_stream_only(request.model):
        raise Rejected("stream_only", response_id=entry["sim_id"])
    if not request.stream and request.enable_thinking is True:
        raise Rejected("thinking_non_stream", response_id=entry["sim_id"])
    try:
        opts = resolve_options(
            request.model,
            request.messages,
            body_seed=request.seed,
            body_sim=request.sim,
            defaults=app.defaults,
            thinking=app.thinks(request.model, request.enable_thinking),
        )
    except SimOptionError as exc:
        raise Rejected(dialect.invalid, INVALID_PARAMETER + str(exc)) from exc
    opts = app.attempts.count(request.messages, opts, entry)
    entry.update(include_usage=request.include_usage, options=opts.as_dict())
    dialect.check(request, opts)
    return Call(
        request_id=entry["request_id"],
        sim_id=entry["sim_id"],
        model=request.model,
        messages=request.messages,
        opts=opts,
        stream=request.stream,
        include_usage=request.include_usage,
        max_tokens=request.max_tokens,
        entry=entry,
        protocol=dialect.name,
        result_format=request.result_format,
        incremental=request.incremental,
        multimodal=request.multimodal,
    )


def _validate(body: Any) -> str | None:
    """Why a compatible-mode body is unacceptable, or None when it is fine."""
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
