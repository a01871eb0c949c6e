"""The sign-in throttle: django-axes counts failed sign-ins (``/accounts/login/`` and
``/admin/login/`` alike) in the database, so every worker sees the same counts, on SQLite and
PostgreSQL. These are the hooks ``chatsite/settings.py`` gives it.

- One account from one address: ``CHAT_LOGIN_FAILURE_LIMIT`` failures (10) lock that pair.
- One address, whatever the accounts: ``CHAT_LOGIN_ADDRESS_FAILURE_LIMIT`` (50) lock the
  address. Higher than the first, or one office behind one NAT would lock itself out with a
  few typos; a guesser spraying one password over many accounts still meets it.
- A failure counts until ``CHAT_LOGIN_LOCKOUT_MINUTES`` (15) have passed since the last failure
  of its account and address (axes' cool-off). A sign-in refused while locked is not checked
  and not counted, so a lock ends exactly that long after the failure that set it, and the
  wait the page states is the wait.

The address is ``REMOTE_ADDR`` and nothing else: behind nginx, Daphne's ``--proxy-headers``
sets it from ``X-Forwarded-For``, which nginx overwrites with the peer it saw
(``deploy/nginx/streamside.conf``), so a client cannot pick a fresh address per guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from axes.handlers.database import AxesDatabaseHandler  # type: ignore[import-untyped]
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def client_address(request: HttpRequest) -> str | None:
    """The address failures are counted against (``AXES_CLIENT_IP_CALLABLE``): the peer Daphne
    reports, never a header a client may have written itself."""
    return request.META.get("REMOTE_ADDR")


def lockout_period(request: HttpRequest | None = None) -> timedelta:
    """How long a failure counts, and so how long a lock lasts (``AXES_COOLOFF_TIME``); read
    per call, so a test may shorten it."""
    return timedelta(minutes=settings.CHAT_LOGIN_LOCKOUT_MINUTES)


def failure_limit(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Failures of one account from one address before it locks (``AXES_FAILURE_LIMIT``)."""
    return int(settings.CHAT_LOGIN_FAILURE_LIMIT)


def _limits() -> list[int]:
    """Each scope's limit, in the order of ``AXES_LOCKOUT_PARAMETERS`` (account and address,
    then address alone); 0 for the address is no limit of its own."""
    return [settings.CHAT_LOGIN_FAILURE_LIMIT, settings.CHAT_LOGIN_ADDRESS_FAILURE_LIMIT]


def _failures(attempts: QuerySet[Any]) -> int:
    return sum(attempts.values_list("failures_since_start", flat=True))


class LoginThrottle(AxesDatabaseHandler):
    """Axes' database handler with a limit per scope: axes compares one count with one limit,
    which would make the address's limit the account's (the address's count is never lower)."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """The failures that count against this sign-in, on the account's scale: the account's
        from this address, or the account's limit itself once any scope is past its own."""
        scopes = self.get_user_attempts(request, credentials)
        counts = [_failures(attempts) for attempts in scopes]
        locked = any(
            limit and count >= limit for count, limit in zip(counts, _limits(), strict=False)
        )
        return max(counts[0], _limits()[0]) if locked else counts[0]

    def locked_until(self, request: HttpRequest, credentials: dict[str, Any] | None) -> datetime:
        """When the lock on this sign-in ends: the latest end among the scopes past their limit
        (now, if none is any more)."""
        now = timezone.now()
        ends = [
            _end_of_lock(attempts, limit, lockout_period(request))
            for attempts, limit in zip(
                self.get_user_attempts(request, credentials), _limits(), strict=False
            )
            if limit
        ]
        return max([now, *(end for end in ends if end is not None)])


def _end_of_lock(attempts: QuerySet[Any], limit: int, period: timedelta) -> datetime | None:
    """When fewer than ``limit`` of these failures still count, or None if that is already so.

    Each row (one account, address and browser) counts its failures until ``period`` after
    its last one: walking the rows from the last to expire, the one that brings the sum to
    the limit is the one whose expiry ends the lock."""
    rows: Iterable[tuple[datetime, int]] = attempts.order_by("-attempt_time").values_list(
        "attempt_time", "failures_since_start"
    )
    counted = 0
    for attempt_time, failures in rows:
        counted += failures
        if counted >= limit:
            return attempt_time + period
    return None


def lockout_response(request: HttpRequest, *_: object) -> HttpResponse:
    """The refusal of a locked sign-in (``AXES_LOCKOUT_CALLABLE``), on the user's page and
    language: 429, the wait in minutes, and ``Retry-After``.

    Takes whatever else axes passes (its async middleware passes the credentials where its
    sync one passes the response it replaces) and reads the credentials from the request."""
    credentials = getattr(request, "axes_credentials", None)
    wait = LoginThrottle().locked_until(request, credentials) - timezone.now()
    seconds = max(1, math.ceil(wait.total_seconds()))
    response = render(
        request,
        "registration/locked_out.html",
        {"minutes": max(1, math.ceil(seconds / 60)), "login_url": request.get_full_path()},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def stated_limit() -> dict[str, int]:
    """What the login page says of the throttle: failures allowed, and the lock in whole
    minutes (empty when the throttle is off)."""
    if not settings.CHAT_LOGIN_FAILURE_LIMIT:
        return {}
    minutes = max(1, math.ceil(settings.CHAT_LOGIN_LOCKOUT_MINUTES))
    return {"limit": settings.CHAT_LOGIN_FAILURE_LIMIT, "minutes": minutes}
