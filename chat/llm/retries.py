"""When ``ChatClient`` asks again, and how long it waits first.

Two kinds of asking again: with a fix (a refusal the client can correct, ``Attempt``), and
unchanged after a wait (a transient failure, ``Retry``). Both happen only before any text or
thinking reached the caller, since a retry after that would repeat the text.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

from .events import UpstreamError, UpstreamRateLimited, UpstreamServerError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses asked again (before the first token only): rate limits and server trouble."""
NO_RETRY_CODES = frozenset({"insufficient_quota"})
"""429s that will not pass by waiting (OpenAI's "you exceeded your current quota")."""


class Attempt(Exception):
    """Raised inside ``stream_reply`` to ask again with a fix (nothing was yielded yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(Exception):
    """Raised inside ``stream_reply`` to ask again unchanged after ``wait`` seconds: a
    transient failure before any text or thinking reached the caller."""

    def __init__(self, error: UpstreamError, wait: float) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait = wait


def rejects_stream_options(error: UpstreamError) -> bool:
    """A 400 that names ``stream_options``: older Ollama, Azure and others refuse the field."""
    return error.status == 400 and "stream_options" in error.message.lower()


def refuses_cumulative(error: UpstreamError, body: Mapping[str, Any]) -> bool:
    """DashScope's 400 for thinking models (QwQ, Qwen3) asked for cumulative output."""
    parameters = body.get("parameters")
    return (
        error.status == 400
        and isinstance(parameters, Mapping)
        and parameters.get("incremental_output") is False
        and "incremental_output" in error.message
    )


def failure_label(error: UpstreamError) -> str:
    """What went wrong, for a log line: the status and code, or the connection error's class."""
    if error.status is not None:
        return f"HTTP {error.status}" + (f" ({error.code})" if error.code else "")
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else error.kind


def is_retryable(error: UpstreamError) -> bool:
    """429 and 5xx, as an HTTP status or as DashScope's error event behind HTTP 200."""
    return (
        isinstance(error, UpstreamRateLimited | UpstreamServerError)
        and error.status in RETRY_STATUSES
        and error.code not in NO_RETRY_CODES
    )


def retry_wait(
    error: UpstreamError,
    attempt: int,
    deadline: float | None,
    *,
    retries: int,
    max_retry_wait: float,
    retry_backoff: float,
) -> float | None:
    """Seconds to wait before asking again, or None when this failure is final."""
    if attempt >= retries:
        return None
    if error.retry_after is not None:
        if error.retry_after > max_retry_wait:
            return None  # the user is better told "retry in N s" now than kept waiting
        wait = error.retry_after
    else:
        ceiling = min(retry_backoff * 2**attempt, max_retry_wait)
        wait = ceiling * random.uniform(0.5, 1.0)  # jitter: retries of many streams spread
    if deadline is not None and asyncio.get_running_loop().time() + wait >= deadline:
        return None
    return wait
