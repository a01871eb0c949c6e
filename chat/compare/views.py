"""The comparison pages: a new run, a run's permalink, the history and the exports."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from chat import providers
from chat.accounts import access
from chat.compare import runs
from chat.compare.rendering import run_context
from chat.compare.replay import present_context, replay_context
from chat.compare.runs import MODES, run_sides, verdict
from chat.models import ComparisonRun
from chat.owners import Owner


def _owned_run(request: HttpRequest, run_id: int) -> ComparisonRun:
    run = runs.get_run(Owner.from_request(request), run_id)
    if run is None:
        raise Http404("No such comparison.")
    return run


def _page(request: HttpRequest, run: ComparisonRun | None) -> HttpResponse:
    context: dict[str, Any] = {
        "model_groups": providers.picker(
            providers.conversation_choice(run.stream_conversation) if run else "",
            access.for_request(request).allows,
        ),
        "presets": runs.PRESETS,
        "measuring": runs.upstream_label(),
        "simulator": settings.LLM_SIMULATOR,
        "prompt_limit": runs.PROMPT_LIMIT,
        "prompt": run.prompt if run else "",
        "socket": f"/ws/compare/{run.pk}/" if run else "/ws/compare/",
    }
    if run is not None:
        context.update(run_context(run))
        context.update(replay_context(run))
        context["present_url"] = reverse("chat:compare_present", args=[run.pk])
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
def present(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run full-window for a projector (large type, the clocks, the chart, keys)."""
    run = _owned_run(request, run_id)
    return render(request, "compare/present.html", present_context(run, shared=False))


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    listed = []
    for run in runs.owned_runs(Owner.from_request(request))[:200]:
        sides = run_sides(run)
        listed.append({"run": run, "verdict": verdict(sides["stream"], sides["nostream"])})
    return render(request, "compare/history.html", {"runs": listed})


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
                    "tokens_estimated": side.tokens_estimated,
                    "error": side.error_message,
                    **runs.side_export_fields(side, run),
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
            **runs.run_export_fields(run),
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
