"""Which answers this process is generating, readable from any thread.

Views run in worker threads. A page asks whether a row marked "streaming" is generated here, so
it never settles a live answer as interrupted while the database missed its heartbeats (a
PostgreSQL restart, say), without an async hop into a service that belongs to an event loop.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_running: dict[int, int] = {}  # answer id -> conversation id


def started(answer_id: int, conversation_id: int) -> None:
    with _lock:
        _running[answer_id] = conversation_id


def ended(answer_id: int) -> None:
    with _lock:
        _running.pop(answer_id, None)


def running_in(conversation_id: int) -> set[int]:
    """The answers of the conversation this process is generating now."""
    with _lock:
        return {answer for answer, conv in _running.items() if conv == conversation_id}
