"""A saved comparison run played back at its recorded pace, without a model call or a socket.

Each answer's timeline (``chat.timeline``: when each frame went out and how many characters it
added) cuts the saved text into the frames the browser saw; ``static/chat/replay.js`` shows
each at its offset from the press of Replay, and swaps in the finished article at the end so
the replay ends looking like the run.

Aligning the offsets. The timeline is the server's clock, from when the request was made; the
figures the run page shows are the browser's, from the click. The two differ by what the
click, the relay and the network added, about the same for every frame of one answer, so each
pane's frames are moved by one constant: the first visible frame lands at the browser's
``browser_first_text_ms`` (or, never measured, stays at the server's time). The gaps between
frames are the recorded ones, unchanged. The pane completes at ``browser_complete_ms`` when it
is consistent with the moved frames (not before the last one, and not later than the server's
own tail after it plus a second: a tab in the background reports late); otherwise at the last
frame plus the server's tail (``total_ms`` after the last frame's time).

A run saved before timelines were recorded has none: its streamed side is spread word by word,
evenly, between its first text and its completion, the other side lands whole at completion,
and the replay says it is approximate.

Several trials are replayed one after another, as the run showed them, each timed from its
own start (the figures of trial 2 and later were measured from their start, not the click).

``replay_context`` and ``present_context`` are the contexts of ``compare/_replay.html`` and
``compare/present.html``, here rather than in the views so a share page can use them too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from chat import providers
from chat.compare.rendering import run_context
from chat.compare.runs import MODES
from chat.models import ComparisonResult, ComparisonRun, Message
from chat.rendering.articles import articles
from chat.rendering.fragments import message_view
from chat.timeline import Step, decode

LATE_REPORT_MS = 1000.0
"""How much later than the server's tail a browser's completion may be and still be used."""

Frame = tuple[int, str, str]
"""One frame to show: milliseconds from the press, answer text added, thinking added."""

_WORD = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True, slots=True)
class PanePlan:
    """One pane of one trial: what to show when, and when its clock stops."""

    frames: list[Frame]
    first_text_ms: int | None
    complete_ms: int
    approximate: bool


def cut(steps: Sequence[Step], content: str, reasoning: str) -> list[tuple[int, str, str]]:
    """The saved text cut into the recorded frames (server times). Frames that add nothing are
    left out; text the steps do not account for (a final row that differs) joins the last."""
    frames: list[tuple[int, str, str]] = []
    t = r = 0
    for step in steps:
        text_chunk = content[t : t + step.text]
        reasoning_chunk = reasoning[r : r + step.reasoning]
        t += step.text
        r += step.reasoning
        if text_chunk or reasoning_chunk:
            frames.append((step.at_ms, text_chunk, reasoning_chunk))
    rest_text, rest_reasoning = content[t:], reasoning[r:]
    if rest_text or rest_reasoning:
        at = frames[-1][0] if frames else (steps[-1].at_ms if steps else 0)
        if frames:
            last = frames.pop()
            frames.append((at, last[1] + rest_text, last[2] + rest_reasoning))
        else:
            frames.append((at, rest_text, rest_reasoning))
    return frames


def align(
    frames: Sequence[tuple[int, str, str]],
    *,
    browser_first_text_ms: float | None,
    browser_complete_ms: float | None,
    server_total_ms: float | None,
) -> PanePlan:
    """Server-timed frames moved onto the browser's clock (see the module docstring)."""
    if not frames:
        complete = browser_complete_ms if browser_complete_ms is not None else server_total_ms
        return PanePlan([], None, round(max(complete or 0.0, 0.0)), approximate=False)
    shift = 0.0
    if browser_first_text_ms is not None:
        shift = browser_first_text_ms - frames[0][0]
    moved: list[Frame] = []
    previous = 0
    for at, text, thought in frames:
        previous = max(previous, round(at + shift))  # never before 0 or the frame before
        moved.append((previous, text, thought))
    last_server = frames[-1][0]
    tail = max((server_total_ms or last_server) - last_server, 0.0)
    last = moved[-1][0]
    complete = last + tail
    if browser_complete_ms is not None and last <= browser_complete_ms <= (
        last + tail + LATE_REPORT_MS
    ):
        complete = browser_complete_ms
    return PanePlan(moved, moved[0][0], round(complete), approximate=False)


def approximate(
    content: str,
    reasoning: str,
    *,
    streamed: bool,
    first_text_ms: float | None,
    complete_ms: float | None,
) -> PanePlan:
    """A pane without a timeline: words spread evenly from first text to completion (a
    streamed answer), or all of it at completion."""
    end = round(max(complete_ms or 0.0, 0.0))
    if not content and not reasoning:
        return PanePlan([], None, end, approximate=True)
    if not streamed:
        return PanePlan([(end, content, reasoning)], end, end, approximate=True)
    start = round(min(max(first_text_ms or 0.0, 0.0), end))
    words = [(w, "") for w in _WORD.findall(reasoning)] + [("", w) for w in _WORD.findall(content)]
    words = [(thought, text) for thought, text in words if thought or text]
    # Leading or trailing whitespace the pattern left out goes with the first or last word.
    joined_text = "".join(text for _, text in words)
    joined_thought = "".join(thought for thought, _ in words)
    frames: list[Frame] = []
    step = (end - start) / len(words) if words else 0.0
    for n, (thought, text) in enumerate(words):
        frames.append((round(start + n * step), text, thought))
    if joined_text != content or joined_thought != reasoning:  # whitespace-only, or none
        frames = [(start, content, reasoning)]
    return PanePlan(frames, start, end, approximate=True)


def pane_plan(result: ComparisonResult, answer: Message) -> PanePlan:
    """The pane's frames from the saved answer and what the browser measured."""
    steps = decode(answer.timeline)
    if steps:
        return align(
            cut(steps, answer.content, answer.reasoning),
            browser_first_text_ms=result.browser_first_text_ms,
            browser_complete_ms=result.browser_complete_ms,
            server_total_ms=answer.total_ms,
        )
    first = result.browser_first_text_ms
    if first is None:
        first = answer.ttft_ms
    complete = result.browser_complete_ms
    if complete is None:
        complete = answer.total_ms
    return approximate(
        answer.content,
        answer.reasoning,
        streamed=result.mode == ComparisonRun.Mode.STREAM,
        first_text_ms=first,
        complete_ms=complete,
    )


def replay_data(run: ComparisonRun) -> dict[str, Any]:
    """Everything ``replay.js`` needs, as JSON-ready data: each trial's two panes (frames,
    first text, completion, the finished article) and whether any of it is approximate."""
    trials: dict[int, dict[str, Any]] = {}
    approximate_any = False
    for result in sorted(run.results.all(), key=lambda r: (r.trial, r.mode)):
        answer = result.answer
        if answer is None or answer.status == Message.Status.STREAMING:
            continue  # deleted, or still running: nothing to replay for this side
        plan = pane_plan(result, answer)
        approximate_any = approximate_any or plan.approximate
        trials.setdefault(result.trial, {"trial": result.trial, "panes": {}})["panes"][
            result.mode
        ] = {
            "answer": answer.pk,
            "frames": [list(frame) for frame in plan.frames],
            "first_text_ms": plan.first_text_ms,
            "complete_ms": plan.complete_ms,
            "article": str(articles.render(message_view(answer, is_latest=False))),
        }
    complete = [t for _, t in sorted(trials.items()) if all(m in t["panes"] for m in MODES)]
    return {
        "run": run.pk,
        "created_at": run.created_at.isoformat(),
        "approximate": approximate_any,
        "trials": complete,
    }


def replay_context(run: ComparisonRun) -> dict[str, Any]:
    """The context ``templates/compare/_replay.html`` needs (the owner's run page, the
    presentation view and a share page all include it)."""
    return {"run": run, "replay": replay_data(run)}


def present_context(run: ComparisonRun, *, shared: bool, back_url: str = "") -> dict[str, Any]:
    """What ``compare/present.html`` (the presentation view) needs. A share page passes
    ``shared=True`` (no socket, no running again) and its own ``back_url`` for Esc."""
    context: dict[str, Any] = {
        **run_context(run),
        **replay_context(run),
        "shared": shared,
        "back_url": back_url or reverse("chat:compare_run", args=[run.pk]),
    }
    if not shared:
        context["socket"] = f"/ws/compare/{run.pk}/"
        context["model_choice"] = providers.conversation_choice(run.stream_conversation)
    return context
