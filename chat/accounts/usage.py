"""Usage accounting: requests and tokens per user per day, and the optional daily token limit.

Tokens are what the upstream reported (a server that reports no usage counts requests only).
Sync functions: async callers go through ``database_sync_to_async``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet, Subquery, Sum
from django.utils import timezone
from django.utils.translation import gettext

from chat.exceptions import ClientError
from chat.models import DailyUsage, Message

RATE_WINDOW = timedelta(minutes=1)


def today() -> date:
    return timezone.now().date()  # UTC: TIME_ZONE is UTC, so the day turns at midnight UTC


def _today(user_id: int) -> QuerySet[DailyUsage]:
    return DailyUsage.objects.filter(user_id=user_id, day=today())


def _add(user_id: int, **counts: int) -> None:
    """Add to the user's row of today, creating it on the day's first use: one UPDATE unless
    the row is new (then an INSERT, and the UPDATE again if another request made it first)."""
    changes = {name: F(name) + count for name, count in counts.items()}
    if _today(user_id).update(**changes):
        return
    try:
        with transaction.atomic():
            DailyUsage.objects.create(user_id=user_id, day=today(), **counts)
    except IntegrityError:  # made meanwhile by a request of another worker
        _today(user_id).update(**changes)


def check_allowance(user_id: int) -> None:
    """Refuse a new request once the user's tokens today reach ``CHAT_DAILY_TOKEN_LIMIT``."""
    limit = settings.CHAT_DAILY_TOKEN_LIMIT
    if not limit:
        return
    used = _today(user_id).aggregate(total=Sum(F("prompt_tokens") + F("completion_tokens")))[
        "total"
    ]
    _refuse_past_allowance(limit, used)


def _refuse_past_allowance(limit: int, used: int | None) -> None:
    if used and used >= limit:
        raise ClientError(
            gettext(
                "You have used today's %(limit)s tokens (%(used)s); "
                "you can ask again after midnight UTC."
            )
            % {"limit": f"{limit:,}", "used": f"{used:,}"}
        )


def _recent_answers(user_id: int | None, session_key: str, now: datetime) -> QuerySet[Message]:
    """The owner's answers saved in the last minute, newest first."""
    owner = (
        {"conversation__user_id": user_id}
        if user_id is not None
        else {"conversation__user__isnull": True, "conversation__session_key": session_key}
    )
    return Message.objects.filter(
        role=Message.Role.ASSISTANT, created_at__gt=now - RATE_WINDOW, **owner
    ).order_by("-created_at")


def _slow_down(limit: int, oldest_in_way: datetime, now: datetime) -> ClientError:
    """The refusal, with the wait until the answer ``oldest_in_way`` leaves the window."""
    wait = max(1, int((oldest_in_way + RATE_WINDOW - now).total_seconds() + 0.999))
    return ClientError(
        gettext("Slow down: at most %(limit)s requests a minute. Try again in %(wait)s s.")
        % {"limit": limit, "wait": wait}
    )


def check_rate(user_id: int | None, session_key: str, needed: int = 1) -> None:
    """Refuse requests beyond ``CHAT_RATE_LIMIT`` a minute for one user (or, in the demo, one
    browser session). Counted from the answers saved in the last minute, so every worker
    agrees without any other shared state."""
    limit = settings.CHAT_RATE_LIMIT
    if not limit:
        return
    now = timezone.now()
    recent = list(
        _recent_answers(user_id, session_key, now).values_list("created_at", flat=True)[:limit]
    )
    if len(recent) + needed <= limit:
        return
    # The wait until enough of those leave the window.
    index = max(0, limit - needed)
    raise _slow_down(limit, recent[index] if index < len(recent) else now, now)


_RATE_BLOCKER = "usage_rate_blocker"  # the names of RequestChecks' annotations
_TOKENS_USED = "usage_tokens_used"


@dataclass(frozen=True, slots=True)
class RequestChecks:
    """``check_rate`` (for one request) and ``check_allowance`` as annotations of the query
    that reads the conversation, instead of a query each; ``enforce`` then refuses as they
    would, in the same order and with the same words."""

    rate_limit: int
    token_limit: int
    now: datetime = field(default_factory=timezone.now)
    annotations: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, user_id: int | None, session_key: str, *, rate: bool = True) -> RequestChecks:
        """The checks of a request by this owner (``rate=False``: its caller checked the rate)."""
        checks = cls(
            rate_limit=settings.CHAT_RATE_LIMIT if rate else 0,
            token_limit=settings.CHAT_DAILY_TOKEN_LIMIT if user_id is not None else 0,
        )
        if checks.rate_limit:
            # One more request fits unless the limit-th newest answer is still in the window,
            # and then that answer is the one to wait for.
            recent = _recent_answers(user_id, session_key, checks.now).values("created_at")
            blocker = recent[checks.rate_limit - 1 : checks.rate_limit]
            checks.annotations[_RATE_BLOCKER] = Subquery(blocker)
        if checks.token_limit and user_id is not None:
            # One row per user and day: its total is what ``check_allowance`` sums.
            used = (
                _today(user_id).order_by().values(total=F("prompt_tokens") + F("completion_tokens"))
            )
            checks.annotations[_TOKENS_USED] = Subquery(used[:1])
        return checks

    def enforce(self, row: Any) -> None:
        """Refuse the request if ``row`` (read with ``annotations``) shows no room for it."""
        if self.rate_limit:
            blocker = getattr(row, _RATE_BLOCKER)
            if blocker is not None:
                raise _slow_down(self.rate_limit, blocker, self.now)
        if self.token_limit:
            _refuse_past_allowance(self.token_limit, getattr(row, _TOKENS_USED))


def count_request(user_id: int) -> None:
    _add(user_id, requests=1)


def add_tokens(user_id: int, prompt: int | None, completion: int | None) -> None:
    if prompt or completion:
        _add(user_id, prompt_tokens=prompt or 0, completion_tokens=completion or 0)


def recent(days: int = 30) -> QuerySet[DailyUsage]:
    """The staff page's rows: the last ``days`` days, newest first, with user names."""
    since = today() - timedelta(days=days - 1)
    return DailyUsage.objects.filter(day__gte=since).select_related("user")
