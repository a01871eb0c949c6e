"""A comparison run as HTML: both panes, the figures, the verdict and the chart, from what is
saved (the page, and the socket's frames when a run starts or the browser reports timings)."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.translation import gettext, gettext_lazy

from chat.compare import runs
from chat.compare.charts import ChartData, TrialWaits, render_waits_chart
from chat.compare.runs import MODES, PANES, SETUPS, Side, pane_setups, run_sides, verdict
from chat.models import ComparisonRun, Message
from chat.owners import Owner
from chat.rendering.fragments import log_id, message_view
from chat.rendering.i18n import duration

MODE_TITLES = {
    ComparisonRun.Mode.STREAM: gettext_lazy("Streaming on"),
    ComparisonRun.Mode.NOSTREAM: gettext_lazy("Streaming off"),
}
SETUP_TITLES = {
    ComparisonRun.Mode.STREAM: gettext_lazy("Setup A"),
    ComparisonRun.Mode.NOSTREAM: gettext_lazy("Setup B"),
}


def run_context(run: ComparisonRun) -> dict[str, Any]:
    """Everything the run's part of the page shows, from what is saved."""
    sides = run_sides(run)
    setups = pane_setups(run) if run.pairing == SETUPS else {}
    panes = []
    for mode in MODES:
        conversation = run.conversation_for(mode)
        answers = list(conversation.messages.filter(role=Message.Role.ASSISTANT))
        latest = sides[mode][-1] if sides[mode] else None
        setup = setups.get(mode)
        panes.append(
            {
                "mode": mode,
                "pane": PANES[mode],
                "title": SETUP_TITLES[mode] if setup else MODE_TITLES[mode],
                "setup": setup.description() if setup else "",
                "log_id": log_id(conversation.pk),
                "answers": [message_view(a, is_latest=False) for a in answers],
                "status": answers[-1].status if answers else "idle",
                "latest": latest,
                "buffered": setup.buffered
                if setup
                else run.buffered and mode == ComparisonRun.Mode.NOSTREAM,
            }
        )
    left, right = sides[ComparisonRun.Mode.STREAM], sides[ComparisonRun.Mode.NOSTREAM]
    if setups:  # either pane may fail; the chart waits for both to end
        complete = (
            all(s.complete_s is not None or s.failed for s in (*left, *right))
            and len(left) == run.trials
        )
    else:
        finished = [s for s in left if s.complete_s is not None]
        complete = len(finished) == run.trials and all(
            s.complete_s is not None or s.failed for s in right
        )
    chart = ""
    if complete and len(right) == run.trials:
        chart = render_waits_chart(
            ChartData(
                stream=[_waits(s) for s in left],
                nostream=[_waits(s) for s in right],
                names=(left[0].setup, right[0].setup) if setups and left else None,
            )
        )
    return {
        "run": run,
        "panes": panes,
        "verdict": verdict(left, right),
        "chart": chart,
        "rows": _rows(sides),
        "about": about(run),
    }


def about(run: ComparisonRun) -> list[str]:
    """What the run's ``about`` line adds to the model and the count: its pairing, its gateway."""
    parts = []
    if run.pairing == SETUPS:
        parts.append(gettext("two setups side by side"))
    if run.gateway_timeout_s:
        limit = duration(run.gateway_timeout_s, -1)
        parts.append(gettext("gateway timeout %(seconds)s") % {"seconds": limit})
    return parts


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
