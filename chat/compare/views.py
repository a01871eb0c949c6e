"""The comparison pages: a new run, a run's permalink, the history and the exports."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from . import comparisons, providers
from .charts import ChartData, TrialWaits, render_waits_chart
from .comparisons import MODES, Side, run_sides, verdict
from .fragments import log_id, message_view
from .models import ComparisonRun, Message
from .owners import Owner
from .views import conversation_choice

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
    run = comparisons.get_run(owner, run_id)
    if run is None:
        return ""
    return render_to_string("compare/_figures.html", {**run_context(run), "oob": True})


def _owned_run(request: HttpRequest, run_id: int) -> ComparisonRun:
    run = comparisons.get_run(Owner.from_request(request), run_id)
    if run is None:
        raise Http404("No such comparison.")
    return run


def _page(request: HttpRequest, run: ComparisonRun | None) -> HttpResponse:
    context: dict[str, Any] = {
        "model_groups": providers.picker(
            conversation_choice(run.stream_conversation) if run else ""
        ),
        "presets": comparisons.PRESETS,
        "measuring": comparisons.upstream_label(),
        "simulator": settings.LLM_SIMULATOR,
        "prompt_limit": comparisons.PROMPT_LIMIT,
        "prompt": run.prompt if run else "",
        "socket": f"/ws/compare/{run.pk}/" if run else "/ws/compare/",
    }
    if run is not None:
        context.update(run_context(run))
    return render(request, "compare/page.html", context)


@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    Owner.from_request(request)  # a session to own the runs
    return _page(request, None)


@require_GET
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    """A run's permalink: its answers, figures and chart, live if it is still running."""
    return _page(request, _owned_run(request, run_id))


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    runs = []
    for run in comparisons.owned_runs(Owner.from_request(request))[:200]:
        sides = run_sides(run)
        runs.append({"run": run, "verdict": verdict(sides["stream"], sides["nostream"])})
    return render(request, "compare/history.html", {"runs": runs})


def _export_rows(run: ComparisonRun) -> list[dict[str, Any]]:
    rows = []
    sides = run_sides(run)
    for mode in MODES:
        for side in sides[mode]:
            rows.append(
                {
                    "trial": side.trial,
                    "mode": side.mode,
                    "status": side.status,
                    "first_text_s": side.first_text_s,
                    "complete_s": side.complete_s,
                    "measured_in_browser": side.measured_in_browser,
                    "server_first_token_s": side.server_first_token_s,
                    "server_total_s": side.server_total_s,
                    "relay_ms": side.relay_ms,
                    "tokens_per_second": side.tokens_per_second,
                    "prompt_tokens": side.prompt_tokens,
                    "completion_tokens": side.completion_tokens,
                    "total_tokens": side.total_tokens,
                    "error": side.error_message,
                }
            )
    return sorted(rows, key=lambda row: (row["trial"], row["mode"] != "stream"))


@require_GET
def export_json(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _owned_run(request, run_id)
    sides = run_sides(run)
    return JsonResponse(
        {
            "id": run.pk,
            "prompt": run.prompt,
            "model": run.model,
            "measured": run.upstream,
            "buffered_off_side": run.buffered,
            "trials": run.trials,
            "created_at": run.created_at.isoformat(),
            "verdict": verdict(sides["stream"], sides["nostream"]),
            "results": _export_rows(run),
        },
        json_dumps_params={"ensure_ascii": False},
    )


@require_GET
def export_csv(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _owned_run(request, run_id)
    rows = _export_rows(run)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="comparison-{run.pk}.csv"'
    return response
