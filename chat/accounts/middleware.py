"""Login required for every page when ``CHAT_REQUIRE_LOGIN`` is on (read per request); the
sockets' account messages of a request held until its response is ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from chat.accounts.signals import asend, collecting, send_now


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


@sync_and_async_middleware
def account_events(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Sends the messages that close or renew sockets (``accounts.signals``) once the response
    is ready. Listed before ``SessionMiddleware``, so the session is saved by then: a socket told
    to reconnect after a password change finds its session under the new key."""
    if iscoroutinefunction(get_response):

        async def serve_async(request: HttpRequest) -> HttpResponseBase:
            with collecting(request) as events:
                try:
                    response: HttpResponseBase = await get_response(request)
                finally:
                    await asend(events.pending)
            return response

        return serve_async

    def serve(request: HttpRequest) -> HttpResponseBase:
        with collecting(request) as events:
            try:
                response: HttpResponseBase = get_response(request)
            finally:
                send_now(events.pending)
        return response

    return serve
