"""Driving the comparison page's socket as its form does: press Run with any fields, read the
frames until the run ends, and wait for the figures the server shows when no browser reports."""

from __future__ import annotations

import asyncio
import html as html_module
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.frames import TRIAL, Frame

VERDICT = re.compile(r'<p class="verdict__text" data-verdict>\s*(.*?)\s*</p>', re.S)


@dataclass
class Run:
    """What one press of Run produced on the socket."""

    sent: float  # monotonic time of the press
    frames: list[Frame] = field(default_factory=list)
    trials: list[dict[str, str]] = field(default_factory=list)

    @property
    def run_id(self) -> int:
        return int(self.trials[0]["run"])

    def final(self, answer_id: int) -> tuple[float, dict[str, str], str]:
        """When an answer's final frame came, its attributes and that frame's HTML."""
        for frame in self.frames:
            if attrs := frame.final_for(answer_id):
                return frame.at, attrs, frame.html
        raise AssertionError(f"answer {answer_id} never finished")

    def first_delta_at(self, answer_id: int) -> float | None:
        return next(
            (f.at for f in self.frames if any(a == answer_id for a, _, _ in f.deltas)), None
        )

    def html(self) -> str:
        return "".join(f.html for f in self.frames)


async def press_run(ws: Any, fields: dict[str, str], *, timeout: float = 60) -> Run:
    """Send the run message (``action`` added) and read until ``#compare-done`` or an alert."""
    run = Run(sent=time.monotonic())
    await ws.send(json.dumps({"action": "run", "trials": "1", **fields}))
    deadline = run.sent + timeout
    while True:
        raw = str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        run.frames.append(Frame(raw, time.monotonic()))
        if 'id="compare-done"' in raw or 'id="alerts"' in raw:
            break
    run.trials = [
        dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))
        for f in run.frames
        for tag in TRIAL.findall(f.html)
    ]
    return run


async def read_until(ws: Any, wanted: Callable[[str], bool], *, timeout: float = 10) -> str:
    """The next frame ``wanted`` accepts (the server's own figures come after a short wait)."""
    deadline = time.monotonic() + timeout
    while True:
        raw = str(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if wanted(raw):
            return raw


def verdict_of(html: str) -> str:
    found = VERDICT.search(html)
    assert found, "no verdict in the frame"
    return " ".join(html_module.unescape(found.group(1)).split())
