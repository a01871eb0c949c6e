"""Thinking written inline as ``<think>…</think>`` at the start of ``content``.

Some servers and models (DeepSeek-R1 distills, QwQ behind servers without a reasoning parser)
put their chain of thought inside the answer text. ``ThinkTags`` is a stateful pass over the
event stream that moves it into ``ReasoningDelta`` events, with tags split across chunks in
any way. Only a block opening the answer counts: a ``<think>`` in the middle of an answer is
the model talking about the tag, and stays text.
"""

from __future__ import annotations

from .events import Event, ReasoningDelta, TextDelta

OPEN = "<think>"
CLOSE = "</think>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkTags:
    """Feed every event through ``feed``; call ``flush`` before the terminal event."""

    def __init__(self) -> None:
        self._state = "start"  # start → thinking → after → answer, or start → answer
        self._buffer = ""
        self._thought_began = False

    def feed(self, event: Event) -> list[Event]:
        if self._state == "answer" or not isinstance(event, TextDelta):
            return [event]
        if self._state == "after":  # the blank lines between a thought and its answer
            text = event.text.lstrip()
            if text:
                self._state = "answer"
            return [TextDelta(text)] if text else []
        self._buffer += event.text
        out: list[Event] = []
        if self._state == "start":
            head = self._buffer.lstrip()
            if not head or (len(head) < len(OPEN) and OPEN.startswith(head)):
                return out  # still could be the opening tag
            if not head.startswith(OPEN):
                self._state = "answer"
                return self._take(TextDelta)
            self._state = "thinking"
            self._buffer = head[len(OPEN) :]
        if not self._thought_began:  # "<think>\n…": the thought starts at its first word
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return out
            self._thought_began = True
        end = self._buffer.find(CLOSE)
        if end < 0:
            # Hold back what may be the closing tag, and blank lines that may precede it.
            cut = len(self._buffer) - _partial_suffix(self._buffer, CLOSE)
            cut = len(self._buffer[:cut].rstrip())
            thought, self._buffer = self._buffer[:cut], self._buffer[cut:]
            return [ReasoningDelta(thought)] if thought else out
        thought = self._buffer[:end].rstrip()
        rest = self._buffer[end + len(CLOSE) :].lstrip()
        self._state, self._buffer = ("answer" if rest else "after"), ""
        if thought:
            out.append(ReasoningDelta(thought))
        if rest:
            out.append(TextDelta(rest))
        return out

    def flush(self) -> list[Event]:
        """What is held back at the end: an unfinished tag is text, or the rest of a thought."""
        if self._state == "thinking":
            self._buffer = self._buffer.rstrip()
            return self._take(ReasoningDelta)
        return self._take(TextDelta)

    def _take(self, kind: type[TextDelta] | type[ReasoningDelta]) -> list[Event]:
        text, self._buffer = self._buffer, ""
        return [kind(text)] if text else []
