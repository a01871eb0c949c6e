"""Error bodies and statuses of every upstream dialect, mapped to one ``UpstreamError`` tree.

Pure functions, no I/O. They read OpenAI's ``{"error": {...}}``, DashScope native's top-level
``{"code", "message", "request_id"}`` (as JSON or as SSE ``data:`` lines, whatever the content
type claims), Ollama's ``{"error": "..."}`` and FastAPI/llama.cpp's ``{"detail": ...}``.
Provider text is shown to users, so a 401's text is never used: some servers echo the key.
What we say ourselves is a ``Wording`` (template and params), the provider's words plain text.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .events import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
)
from .wording import Wording

# Error bodies are only shown as a snippet; don't let a misbehaving server make us buffer more.
ERROR_BODY_LIMIT = 64 * 1024
_SNIPPET_CHARS = 200
_REQUEST_ID_HEADERS = ("x-request-id", "x-dashscope-request-id", "request-id")


@dataclass(frozen=True, slots=True)
class ProviderError:
    """What a provider said about an error, whatever its JSON dialect."""

    message: str | None = None
    code: str | None = None
    request_id: str | None = None


def clean(value: Any) -> str | None:
    """Stringify a provider field and strip it; empty becomes None."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def snippet(text: str) -> str | None:
    """Collapse whitespace and truncate, for bodies that are not structured errors."""
    flat = " ".join(text.split())
    if not flat:
        return None
    return flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1] + "…"


def provider_error_from_obj(obj: Any) -> ProviderError | None:
    """Read OpenAI, DashScope-native and FastAPI/llama.cpp error shapes; None if none match."""
    if not isinstance(obj, Mapping):
        return None
    top_request_id = clean(obj.get("request_id"))
    error = obj.get("error")
    if isinstance(error, Mapping):
        return ProviderError(
            message=clean(error.get("message")) or clean(error.get("msg")),
            code=clean(error.get("code")) or clean(error.get("type")),
            request_id=top_request_id or clean(error.get("request_id")),
        )
    if isinstance(error, str) and error.strip():  # Ollama: {"error": "model not found"}
        return ProviderError(message=error.strip(), request_id=top_request_id)
    if "message" in obj or "msg" in obj or "code" in obj:  # DashScope native
        return ProviderError(
            message=clean(obj.get("message")) or clean(obj.get("msg")),
            code=clean(obj.get("code")),
            request_id=top_request_id,
        )
    detail = obj.get("detail")
    if isinstance(detail, str):
        return ProviderError(message=clean(detail), request_id=top_request_id)
    if isinstance(detail, list):  # FastAPI validation errors
        msgs = [clean(d.get("msg")) for d in detail if isinstance(d, Mapping)]
        joined = "; ".join(m for m in msgs if m)
        return ProviderError(message=joined or None, request_id=top_request_id)
    return None


def parse_error_body(body: bytes) -> ProviderError:
    """Sniff an error body: JSON first, then SSE ``data:`` lines, else a text snippet."""
    text = body.decode("utf-8", errors="replace")
    try:
        found = provider_error_from_obj(json.loads(text))
    except ValueError:
        found = None
        # SSE-framed error body, often labelled application/json: use the first JSON data line.
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            if not line.startswith("data:"):
                continue
            try:
                found = provider_error_from_obj(json.loads(line[5:]))
            except ValueError:
                continue
            if found is not None:
                break
    if found is not None:
        return found
    return ProviderError(message=snippet(text))


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds/HTTP-date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - time.time())
    return max(0.0, value) if math.isfinite(value) else None


def server_label(base_url: str) -> str:
    """``host:port`` of the base URL, never its userinfo (which may hold credentials)."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        return "invalid URL"
    host = url.host or "?"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return f"{host}:{port}" if port else host


def _endpoint_label(url: str) -> str:
    """``host:port/path`` of the endpoint, for telling users which URL is wrong."""
    try:
        path = httpx.URL(url).path.rstrip("/")
    except (httpx.InvalidURL, TypeError):
        path = ""
    return f"{server_label(url)}{path}"


def header_request_id(headers: Mapping[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in _REQUEST_ID_HEADERS:
        value = clean(lowered.get(name))
        if value:
            return value
    return None


def rate_limited_wording(wait: float | None) -> Wording:
    """What a 429 tells the user: when to retry, if the server said."""
    if wait is None:
        return Wording(UpstreamRateLimited.default_message)
    return Wording(
        "Rate limited by the model server; retry in %(seconds)s s.", seconds=max(1, math.ceil(wait))
    )


def rate_limited_message(wait: float | None) -> str:
    """``rate_limited_wording`` in English."""
    return rate_limited_wording(wait).text()


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, url: str
) -> UpstreamError:
    """Map a non-2xx response of the endpoint ``url`` to the right ``UpstreamError`` (pure)."""
    provider = parse_error_body(body)
    detail: str | Wording | None = provider.message
    common: dict[str, Any] = {
        "status": status,
        "code": provider.code,
        "request_id": provider.request_id or header_request_id(headers),
        "retry_after": parse_retry_after(headers),
    }
    if status == 401:
        # No provider text: some servers echo (part of) the key back in it.
        return UpstreamAuthError(
            Wording("The model server rejected the API key (HTTP %(status)s).", status=status),
            **common,
        )
    if status == 403:
        return UpstreamAuthError(
            Wording(
                "Access denied by the model server (HTTP %(status)s): %(detail)s",
                status=status,
                detail=detail,
            )
            if detail
            else Wording("Access denied by the model server (HTTP %(status)s).", status=status),
            **common,
        )
    if status == 429:
        return UpstreamRateLimited(rate_limited_wording(common["retry_after"]), **common)
    if status == 404 and not detail:
        detail = Wording(
            "nothing answers at %(endpoint)s; check the base URL", endpoint=_endpoint_label(url)
        )
    if status == 400 and provider.message and _wants_streaming(provider.message):
        return UpstreamBadRequest(
            Wording(
                "This model only answers streaming requests: turn Stream on and ask again "
                "(the model server said: %(detail)s).",
                detail=provider.message,
            ),
            **common,
        )
    if 400 <= status < 500:
        return UpstreamBadRequest(
            Wording(
                "The model server refused the request (HTTP %(status)s): %(detail)s",
                status=status,
                detail=detail,
            )
            if detail
            else Wording("The model server refused the request (HTTP %(status)s).", status=status),
            **common,
        )
    if 500 <= status < 600:
        return UpstreamServerError(
            Wording(
                "The model server failed (HTTP %(status)s): %(detail)s",
                status=status,
                detail=detail,
            )
            if detail
            else Wording("The model server failed (HTTP %(status)s).", status=status),
            **common,
        )
    return UpstreamProtocolError(
        Wording("The model server sent an unexpected response (HTTP %(status)s).", status=status),
        **common,
    )


def stream_error(payload: Mapping[str, Any]) -> UpstreamStreamError:
    """An error object delivered after HTTP 200: "<provider message> (<code>)", the provider's
    own words; ours only when it sent no message."""
    provider = provider_error_from_obj(payload) or ProviderError()
    message: str | Wording
    if provider.message and provider.code:
        message = f"{provider.message} ({provider.code})"
    elif provider.message:
        message = provider.message
    elif provider.code:
        message = Wording(
            "The model server reported an error while answering (%(code)s).", code=provider.code
        )
    else:
        message = Wording(UpstreamStreamError.default_message)
    return UpstreamStreamError(message, code=provider.code, request_id=provider.request_id)


def _wants_streaming(detail: str | None) -> bool:
    """DashScope's 400 for stream-only and thinking models called without streaming."""
    text = (detail or "").lower()
    return "only support stream" in text or (
        "enable_thinking" in text and ("non-streaming" in text or "stream call" in text)
    )


# DashScope native error codes (reference "Errors" table) → the status they stand for, for
# ``event:error`` frames that arrive behind HTTP 200 and carry only a code.
_CODE_STATUS = (
    ("Throttling", 429),
    ("InvalidApiKey", 401),
    ("AccessDenied", 403),
    ("Model.AccessDenied", 403),
    ("AllocationQuota", 403),
    ("Arrearage", 403),
    ("ModelNotFound", 404),
    ("InternalError", 500),
    ("SystemError", 500),
    ("ModelServiceFailed", 500),
    ("RequestTimeOut", 500),
    ("ModelServingError", 503),
    ("ModelUnavailable", 503),
)


def error_from_event(payload: Mapping[str, Any]) -> UpstreamError:
    """A DashScope native ``event:error`` frame: rate limits and key errors keep their kind.

    Moderation (``DataInspectionFailed``) and unknown codes stay ``UpstreamStreamError`` with
    the provider's message, so partial text is kept and marked as cut off.
    """
    provider = provider_error_from_obj(payload) or ProviderError()
    code = provider.code or ""
    status = next((s for prefix, s in _CODE_STATUS if code.startswith(prefix)), None)
    if status is None:
        return stream_error(payload)
    body = json.dumps(
        {"code": code, "message": provider.message, "request_id": provider.request_id}
    ).encode()
    return error_from_response(status, {}, body, "")
