"""Usage accounting: requests and tokens per user per day, and the optional daily token limit.

Tokens are what the upstream reported (a server that reports no usage counts requests only).
Sync functions: async callers go through ``database_sync_to_async``.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from .exceptions import ClientError
from .models import DailyUsage


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
            f"You have used today's {limit:,} tokens ({used:,}); "
            "you can ask again after midnight UTC."
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
