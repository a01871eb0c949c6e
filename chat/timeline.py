"""An answer's timeline: when each of its frames went out and what it added, in a few bytes.

A replay (a shared comparison run, a shared conversation) plays an answer back at the pace it
was generated, without a model call: the saved text is cut into the recorded frames and each
is shown at its recorded offset. Stored in ``Message.timeline`` as version 1: the byte ``1``,
then for each frame three unsigned LEB128 varints: milliseconds since the frame before (the
first: since the request was made), characters of answer text added, characters of thinking
added. At 40 tokens/s a frame costs three to four bytes: about 700 bytes for 200 frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

VERSION = 1


@dataclass(frozen=True, slots=True)
class Step:
    """One frame: its time since the request (ms) and the characters it added."""

    at_ms: int
    text: int
    reasoning: int = 0


class Recorder:
    """Writes a timeline as an answer's frames go out: a few bytes each, no object per frame
    (a generation holds it for its whole life, hundreds at once on a worker)."""

    __slots__ = ("data", "previous")

    def __init__(self) -> None:
        self.data = bytearray([VERSION])
        self.previous = 0

    def add(self, at_ms: int, text: int, reasoning: int = 0) -> None:
        """A frame went out ``at_ms`` after the request (never before the last one's)."""
        at_ms = max(at_ms, self.previous)
        if text < 0 or reasoning < 0:
            raise ValueError("a frame cannot take characters away")
        for number in (at_ms - self.previous, text, reasoning):
            _varint(self.data, number)
        self.previous = at_ms

    def __bytes__(self) -> bytes:
        return bytes(self.data)


def encode(steps: Iterable[Step]) -> bytes:
    """The steps as stored."""
    recorder = Recorder()
    for step in steps:
        recorder.add(step.at_ms, step.text, step.reasoning)
    return bytes(recorder)


def decode(data: bytes | memoryview | None) -> list[Step]:
    """The stored steps (none for an answer saved before timelines, or an unknown version)."""
    if not data:
        return []
    raw = bytes(data)
    if raw[0] != VERSION:
        return []
    numbers = _varints(raw, 1)
    steps, at = [], 0
    try:
        while True:
            gap, text, reasoning = next(numbers), next(numbers), next(numbers)
            at += gap
            steps.append(Step(at, text, reasoning))
    except StopIteration:
        return steps


def _varint(out: bytearray, number: int) -> None:
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _varints(raw: bytes, start: int) -> Iterator[int]:
    number = shift = 0
    for byte in raw[start:]:
        number |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        yield number
        number = shift = 0
