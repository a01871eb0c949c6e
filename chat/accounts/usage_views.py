"""The staff page of usage: requests and tokens per user per day, the last 30 days."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import usage

DAYS = 30


@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    """Staff only; anyone else gets 404, as for anything that is not theirs."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    rows = usage.recent(DAYS)
    totals = (
        rows.values("user__username")
        .annotate(
            requests=Sum("requests"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        .order_by("-completion", "user__username")
    )
    return render(
        request,
        "chat/usage.html",
        {
            "days": DAYS,
            "rows": rows,
            "totals": totals,
            "limit": settings.CHAT_DAILY_TOKEN_LIMIT,
        },
    )
