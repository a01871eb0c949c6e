"""Usage accounting: requests and tokens per user per day, the optional daily token limit,
the per-minute rate and the cap on answers streaming at once.

Tokens are what the upstream reported. An answer whose upstream reported no usage (stopped or
cut off before the last chunk that carries it, or from a server that sends none while
streaming, as llama.cpp) counts an estimate of what was sent and streamed
(``estimate_tokens``), marked as one.
Sync functions: async callers go through ``database_sync_to_async``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from chat.accounts import access
from chat.exceptions import ClientError
from chat.models import DailyUsage, Message

RATE_WINDOW = timedelta(minutes=1)

# Counted one token each (as the simulator counts them): CJK punctuation, kana, ideographs,
# Hangul syllables, full-width forms. Everything else is about four characters a token.
_CJK_RE = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # tokens a chat template adds per message (role, separators)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate, used only when the upstream reported no usage: one token
    per CJK character, one per four other characters (spaces included), rounded up."""
    cjk = cjk_characters(text)
    return cjk + math.ceil((len(text) - cjk) / CHARS_PER_TOKEN)


def cjk_characters(text: str) -> int:
    """The characters of ``text`` that ``estimate_tokens`` counts one token each (a streaming
    answer's live count adds them up piece by piece)."""
    return len(_CJK_RE.findall(text))


def estimate_prompt_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """The estimate of a request's prompt: each message's text and its template overhead."""
    return sum(estimate_tokens(m.get("content", "")) + MESSAGE_OVERHEAD for m in messages)


def lock_owner(user_id: int | None, session_key: str) -> None:
    """Hold the owner's lock until the transaction ends: one user's (or demo session's) new
    requests are checked and saved one after another, on every worker, so two sends into two
    conversations cannot both find room under a limit. PostgreSQL only: SQLite transactions
    here are IMMEDIATE, so they take the whole database for writing anyway."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        return
    name = f"streamside-owner:{user_id}" if user_id is not None else f"streamside-s:{session_key}"
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


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
    """Refuse a new request once the user's tokens today reach their daily limit (their own,
    their groups' or ``CHAT_DAILY_TOKEN_LIMIT``: ``access.daily_limit``)."""
    limit = access.of_user(user_id).token_limit
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


def _answers_of(user_id: int | None, session_key: str) -> QuerySet[Message]:
    """Every answer of the owner's, in any conversation (comparison panes too)."""
    owner = (
        {"conversation__user_id": user_id}
        if user_id is not None
        else {"conversation__user__isnull": True, "conversation__session_key": session_key}
    )
    return Message.objects.filter(role=Message.Role.ASSISTANT, **owner)


def _recent_answers(user_id: int | None, session_key: str, since: datetime) -> QuerySet[Message]:
    """The owner's answers saved after ``since`` (a minute ago: the rate window), newest first."""
    recent = _answers_of(user_id, session_key).filter(created_at__gt=since)
    return recent.order_by("-created_at")


def _streaming_answers(
    user_id: int | None, session_key: str, live: Collection[int]
) -> QuerySet[Message]:
    """The owner's answers being generated now, on any worker: streaming with a fresh
    heartbeat (one a dead worker left does not count), or running on this worker. The
    heartbeat's age is judged by the database's clock, the one every worker shares."""
    fresh = Q(heartbeat_at__gte=Now() - timedelta(seconds=settings.STREAM_ORPHAN_AFTER))
    if live:
        fresh |= Q(pk__in=live)
    streaming = _answers_of(user_id, session_key).filter(status=Message.Status.STREAMING)
    return streaming.filter(fresh).order_by("pk")


def _too_many_at_once(limit: int) -> ClientError:
    return ClientError(
        ngettext(
            "You already have %(limit)s answer streaming: wait for it to finish or stop it, "
            "then send again.",
            "You already have %(limit)s answers streaming: wait for one to finish or stop one, "
            "then send again.",
            limit,
        )
        % {"limit": limit}
    )


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
        _recent_answers(user_id, session_key, now - RATE_WINDOW).values_list(
            "created_at", flat=True
        )[:limit]
    )
    if len(recent) + needed <= limit:
        return
    # The wait until enough of those leave the window.
    index = max(0, limit - needed)
    raise _slow_down(limit, recent[index] if index < len(recent) else now, now)


_RATE_BLOCKER = "usage_rate_blocker"  # the names of RequestChecks' annotations
_TOKENS_USED = "usage_tokens_used"
_AT_ONCE_BLOCKER = "usage_at_once_blocker"


@dataclass(frozen=True, slots=True)
class RequestChecks:
    """``check_rate`` (for one request), ``check_allowance`` and the cap on answers streaming
    at once (``CHAT_MAX_CONCURRENT``) as annotations of the query that reads the conversation,
    instead of a query each; ``enforce`` then refuses as they would, in the same order and with
    the same words. Read under ``lock_owner``, so they hold across workers."""

    rate_limit: int
    token_limit: int
    concurrent_limit: int = 0
    now: datetime = field(default_factory=timezone.now)
    annotations: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def limits(cls, user_id: int | None) -> RequestChecks:
        """The limits that apply to a request by this owner, without the annotations (for
        ``enforce`` on a row read by a query built once: ``annotate`` then ``since``)."""
        return cls(
            rate_limit=settings.CHAT_RATE_LIMIT,
            token_limit=settings.CHAT_DAILY_TOKEN_LIMIT if user_id is not None else 0,
            concurrent_limit=settings.CHAT_MAX_CONCURRENT,
        )

    @classmethod
    def of(cls, user_id: int | None, session_key: str, live: Collection[int] = ()) -> RequestChecks:
        """The checks of a request by this owner (``live``: the answers this worker runs)."""
        checks = cls.limits(user_id)
        checks.annotations.update(checks.annotate(user_id, session_key, live, checks.since))
        return checks

    @property
    def since(self) -> datetime:
        """The start of the rate window the checks count answers from."""
        return self.now - RATE_WINDOW

    def annotate(
        self, user_id: int | None, session_key: str, live: Collection[int], since: datetime
    ) -> dict[str, Any]:
        """The annotations of the conversation's query that ``enforce`` reads."""
        annotations: dict[str, Any] = {}
        if self.rate_limit:
            # One more request fits unless the limit-th newest answer is still in the window,
            # and then that answer is the one to wait for.
            recent = _recent_answers(user_id, session_key, since).values("created_at")
            blocker = recent[self.rate_limit - 1 : self.rate_limit]
            annotations[_RATE_BLOCKER] = Subquery(blocker)
        if user_id is not None:
            # One row per user and day: its total is what ``check_allowance`` sums. Read even
            # without the setting's limit: the user's own or their groups' may apply
            # (``access.of_row``, read with it).
            used = (
                _today(user_id).order_by().values(total=F("prompt_tokens") + F("completion_tokens"))
            )
            annotations[_TOKENS_USED] = Subquery(used[:1])
        if self.concurrent_limit:
            # As the rate: the limit-th answer streaming now, if there is one, leaves no room.
            streaming = _streaming_answers(user_id, session_key, live).values("pk")
            nth = streaming[self.concurrent_limit - 1 : self.concurrent_limit]
            annotations[_AT_ONCE_BLOCKER] = Subquery(nth)
        return annotations

    def enforce(self, row: Any) -> None:
        """Refuse the request if ``row`` (read with ``annotations``) shows no room for it."""
        if self.rate_limit:
            blocker = getattr(row, _RATE_BLOCKER)
            if blocker is not None:
                raise _slow_down(self.rate_limit, blocker, self.now)
        if self.token_limit:
            _refuse_past_allowance(self.token_limit, getattr(row, _TOKENS_USED))
        if self.concurrent_limit and getattr(row, _AT_ONCE_BLOCKER) is not None:
            raise _too_many_at_once(self.concurrent_limit)


def count_request(user_id: int) -> None:
    _add(user_id, requests=1)


def add_tokens(
    user_id: int, prompt: int | None, completion: int | None, *, estimated: bool = False
) -> None:
    """Add an answer's tokens to its user's day; ``estimated``: ours, not the upstream's."""
    if prompt or completion:
        counts = {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0}
        if estimated:
            counts["estimated_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
        _add(user_id, **counts)


def recent(days: int = 30) -> QuerySet[DailyUsage]:
    """The staff page's rows: the last ``days`` days, newest first, with user names."""
    since = today() - timedelta(days=days - 1)
    return DailyUsage.objects.filter(day__gte=since).select_related("user")
