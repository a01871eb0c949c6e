"""Usage accounting: requests and tokens per user per day, and the optional daily token limit.

Tokens are what the upstream reported (a server that reports no usage counts requests only).
Sync functions: async callers go through ``database_sync_to_async``.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.db.models import F, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext

from .exceptions import ClientError
from .models import DailyUsage, Message

RATE_WINDOW = timedelta(minutes=1)


def today() -> date:
    return timezone.now().date()  # UTC: TIME_ZONE is UTC, so the day turns at midnight UTC


def _row(user_id: int) -> QuerySet[DailyUsage]:
    DailyUsage.objects.get_or_create(user_id=user_id, day=today())
    return DailyUsage.objects.filter(user_id=user_id, day=today())


def check_allowance(user_id: int) -> None:
    """Refuse a new request once the user's tokens today reach ``CHAT_DAILY_TOKEN_LIMIT``."""
    limit = settings.CHAT_DAILY_TOKEN_LIMIT
    if not limit:
        return
    used = DailyUsage.objects.filter(user_id=user_id, day=today()).aggregate(
        total=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["total"]
    if used and used >= limit:
        raise ClientError(
            gettext(
                "You have used today's %(limit)s tokens (%(used)s); "
                "you can ask again after midnight UTC."
            )
            % {"limit": f"{limit:,}", "used": f"{used:,}"}
        )


def check_rate(user_id: int | None, session_key: str, needed: int = 1) -> None:
    """Refuse requests beyond ``CHAT_RATE_LIMIT`` a minute for one user (or, in the demo, one
    browser session). Counted from the answers saved in the last minute, so every worker
    agrees without any other shared state."""
    limit = settings.CHAT_RATE_LIMIT
    if not limit:
        return
    now = timezone.now()
    owner = (
        {"conversation__user_id": user_id}
        if user_id is not None
        else {"conversation__user__isnull": True, "conversation__session_key": session_key}
    )
    recent = list(
        Message.objects.filter(
            role=Message.Role.ASSISTANT, created_at__gt=now - RATE_WINDOW, **owner
        )
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) + needed <= limit:
        return
    # The wait until enough of those leave the window.
    index = max(0, limit - needed)
    oldest_in_way = recent[index] if index < len(recent) else now
    wait = max(1, int((oldest_in_way + RATE_WINDOW - now).total_seconds() + 0.999))
    raise ClientError(
        gettext("Slow down: at most %(limit)s requests a minute. Try again in %(wait)s s.")
        % {"limit": limit, "wait": wait}
    )


def count_request(user_id: int) -> None:
    _row(user_id).update(requests=F("requests") + 1)


def add_tokens(user_id: int, prompt: int | None, completion: int | None) -> None:
    if prompt or completion:
        _row(user_id).update(
            prompt_tokens=F("prompt_tokens") + (prompt or 0),
            completion_tokens=F("completion_tokens") + (completion or 0),
        )


def recent(days: int = 30) -> QuerySet[DailyUsage]:
    """The staff page's rows: the last ``days`` days, newest first, with user names."""
    since = today() - timedelta(days=days - 1)
    return DailyUsage.objects.filter(day__gte=since).select_related("user")
