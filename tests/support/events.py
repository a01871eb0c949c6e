"""Reading what the upstream client yielded: an answer's text, and the error it failed with."""

from __future__ import annotations

from collections.abc import Iterable

from chat.llm import Event, Failed, TextDelta, UpstreamError


def text_of(events: Iterable[Event]) -> str:
    """The answer's text as the events spelled it (thinking left out)."""
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def failure(events: list[Event]) -> UpstreamError:
    """The error ending ``events``, which must be their only ``Failed``."""
    assert events and isinstance(events[-1], Failed), events
    assert not any(isinstance(e, Failed) for e in events[:-1]), events
    return events[-1].error
