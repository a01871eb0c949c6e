"""Login required for every page when ``CHAT_REQUIRE_LOGIN`` is on (read per request)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponseBase


class LoginRequiredWhenConfigured(LoginRequiredMiddleware):
    """Django's ``LoginRequiredMiddleware`` (views opt out with ``@login_not_required``),
    active only when the deployment asks for accounts; the demo runs without them."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: list[Any],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not settings.CHAT_REQUIRE_LOGIN:
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
