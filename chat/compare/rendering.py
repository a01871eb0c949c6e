"""A comparison run as HTML: both panes, the figures, the verdict and the chart, from what is
saved (the page, and the socket's frames when a run starts or the browser reports timings)."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.translation import gettext_lazy

from chat.compare import runs
from chat.compare.charts import ChartData, TrialWaits, render_waits_chart
from chat.compare.runs import MODES, Side, run_sides, verdict
from chat.models import ComparisonRun, Message
from chat.owners import Owner
from chat.rendering.fragments import log_id, message_view

MODE_TITLES = {
    ComparisonRun.Mode.STREAM: gettext_lazy("Streaming on"),
    ComparisonRun.Mode.NOSTREAM: gettext_lazy("Streaming off"),
}


def run_context(run: ComparisonRun) -> dict[str, Any]:
    """Everything the run's part of the page shows, from what is saved."""
    sides = run_sides(run)
    panes = []
    for mode in MODES:
        conversation = run.conversation_for(mode)
        answers = list(conversation.messages.filter(role=Message.Role.ASSISTANT))
        latest = sides[mode][-1] if sides[mode] else None
        panes.append(
            {
                "mode": mode,
                "title": MODE_TITLES[mode],
                "log_id": log_id(conversation.pk),
                "answers": [message_view(a, is_latest=False) for a in answers],
                "status": answers[-1].status if answers else "idle",
                "latest": latest,
                "buffered": run.buffered and mode == ComparisonRun.Mode.NOSTREAM,
            }
        )
    finished = [s for s in sides[ComparisonRun.Mode.STREAM] if s.complete_s is not None]
    complete = len(finished) == run.trials and all(
        s.complete_s is not None or s.failed for s in sides[ComparisonRun.Mode.NOSTREAM]
    )
    chart = ""
    if complete and len(sides[ComparisonRun.Mode.NOSTREAM]) == run.trials:
        chart = render_waits_chart(
            ChartData(
                stream=[_waits(s) for s in sides[ComparisonRun.Mode.STREAM]],
                nostream=[_waits(s) for s in sides[ComparisonRun.Mode.NOSTREAM]],
            )
        )
    return {
        "run": run,
        "panes": panes,
        "verdict": verdict(sides[ComparisonRun.Mode.STREAM], sides[ComparisonRun.Mode.NOSTREAM]),
        "chart": chart,
        "rows": _rows(sides),
    }


def _waits(side: Side) -> TrialWaits:
    return TrialWaits(first_text_s=side.first_text_s, complete_s=side.complete_s)


def _rows(sides: dict[str, list[Side]]) -> list[dict[str, Any]]:
    """The figures table: one row per trial, both modes side by side."""
    rows = []
    for on, off in zip(
        sides[ComparisonRun.Mode.STREAM], sides[ComparisonRun.Mode.NOSTREAM], strict=False
    ):
        rows.append({"trial": on.trial, "on": on, "off": off})
    return rows


def render_run(run: ComparisonRun, *, oob: bool) -> str:
    """The run's panes, figures, verdict and chart (a frame when a run starts on the socket)."""
    return render_to_string("compare/_run.html", {**run_context(run), "oob": oob})


def render_figures(owner: Owner, run_id: int) -> str:
    """After the browser reports its timings: each pane's figures, the verdict, the chart."""
    run = runs.get_run(owner, run_id)
    if run is None:
        return ""
    return render_to_string("compare/_figures.html", {**run_context(run), "oob": True})
