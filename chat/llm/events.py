"""What a reply is made of: the typed events ``ChatClient.stream_reply`` yields, and its errors.

Every protocol (OpenAI-compatible, DashScope native) is parsed into these same events, so the
relay, the database and the browser see one stream whatever the upstream speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from .wording import Wording


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the visible answer; never empty."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's thinking (reasoning_content / reasoning / reasoning_text)."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the server; cumulative, so the last one wins."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True, slots=True)
class Finished:
    """The model finished normally; ``reason`` is the server's finish_reason ("stop", ...)."""

    reason: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The reply failed; always the last event of a reply."""

    error: UpstreamError


@dataclass(frozen=True, slots=True)
class Retrying:
    """The server refused for now (``reason``: "HTTP 503", say) before the answer began; the
    client asks again in ``wait`` seconds, as retry ``attempt`` of ``retries``. Lets the user
    see why the first word is late instead of a timer alone."""

    attempt: int
    retries: int
    wait: float
    reason: str


Event: TypeAlias = TextDelta | ReasoningDelta | Usage | Finished | Failed | Retrying


class UpstreamError(Exception):
    """Base of every upstream failure.

    ``wording`` is what we say, as data (a template of ours and its params), so the Django side
    can show it in the reader's language; None when the message is the provider's own text.
    ``message`` is the English sentence either way (logs, exports, the saved row).
    """

    kind: ClassVar[str] = "error"
    default_message: ClassVar[str] = "The model server failed."

    def __init__(
        self,
        message: str | Wording | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        self.wording: Wording | None = None
        self._text = ""
        self.reword(Wording(self.default_message) if message is None else message)
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.code = code

    @property
    def message(self) -> str:
        """The English sentence: our wording's, else the provider's own text."""
        return self.wording.text() if self.wording is not None else self._text

    def reword(self, message: str | Wording) -> None:
        """Say it differently (a wait learnt later, a key hidden); the rest stays."""
        if isinstance(message, Wording):
            self.wording, self._text = message, ""
        else:
            self.wording, self._text = None, message
        self.args = (self.message,)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [f"message={self.message!r}"]
        for name in ("status", "code", "retry_after", "request_id"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes would otherwise be lost by pickle/copy.
        return (type(self), (self.wording or self._text,), self.__dict__.copy())


class UpstreamUnavailable(UpstreamError):
    kind = "unavailable"
    default_message = "Could not reach the model server. Is it running?"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    default_message = "Request timed out, please try again later."


class UpstreamAuthError(UpstreamError):
    kind = "auth"
    default_message = "The model server rejected the API key (HTTP 401)."


class UpstreamRateLimited(UpstreamError):
    kind = "rate_limit"
    default_message = "Rate limited by the model server; please wait a moment and retry."


class UpstreamBadRequest(UpstreamError):
    kind = "bad_request"
    default_message = "The model server refused the request."


class UpstreamServerError(UpstreamError):
    kind = "server"
    default_message = "The model server failed."


class UpstreamStreamError(UpstreamError):
    kind = "stream_error"
    default_message = "The model server reported an error while answering."


class UpstreamInterrupted(UpstreamError):
    kind = "incomplete"
    default_message = "The answer was cut off: the model server closed the stream before finishing."


class UpstreamProtocolError(UpstreamError):
    kind = "protocol"
    default_message = "The model server sent a response that could not be understood."
