"""The in-memory request log tests read to see what the upstream observed.

Entries are live dicts: the intake creates one per chat request and the reply code keeps
updating it (tokens sent, timings, outcome), so ``GET /_sim/requests`` shows a stream in flight.

Each log entry records ``protocol`` (``openai`` or ``dashscope``), what was sent (``text`` and
``tokens_sent`` for the answer, ``reasoning`` and ``reasoning_tokens_sent`` for the thinking,
without any ``<think>`` tags), timings (``first_token_at`` is the first token of either kind,
``first_answer_at`` the first answer token) and the outcome; with ``fault_times``, ``attempt``
counts the requests of that message so far (the fault hits attempts 1 to ``fault_times``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from simulator.wire import Scope

__all__ = ["LOG_SIZE", "RequestLog", "new_entry"]

LOG_SIZE = 1000


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


def new_entry(
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
        "path": (scope or {}).get("path"),
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
