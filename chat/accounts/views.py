"""Accounts' pages: sign-up when the deployment allows it (login, logout, password change and
password reset are Django's own views, with templates in the app's style under
``templates/registration/``), and the staff page of usage: requests and tokens per user per
day, the last 30 days."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import PasswordResetForm, UserCreationForm
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from chat.accounts import oidc, throttle, usage

DAYS = 30


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Only where ``CHAT_ALLOW_SIGNUP`` is on; elsewhere accounts come from the admin."""
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is not open here: ask an administrator for an account.")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Named: with the throttle's backend first (AUTHENTICATION_BACKENDS), Django cannot
        # tell which one vouches for a user who was never authenticated.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


class LoginView(auth_views.LoginView):
    """Django's login, telling the page whether sign-up is open and how many failed sign-ins
    lock it (``accounts.throttle``; a locked sign-in gets the throttle's own page, 429)."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {
            **super().get_context_data(**kwargs),
            "allow_signup": settings.CHAT_ALLOW_SIGNUP,
            "throttle": throttle.stated_limit(),
            **oidc.login_context(self.request),
        }

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = oidc.refusal_of_passwords(request)
        if refused is not None:
            context = {**self.get_context_data(), **refused}
            return self.render_to_response(context, status=403)
        return super().post(request, *args, **kwargs)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset request (the same "sent" page whether or not an account has the address;
    no email for inactive accounts), telling the email how long its link works."""

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        # Read per request, not at import: PASSWORD_RESET_TIMEOUT is what the token checks.
        minutes = max(1, math.ceil(settings.PASSWORD_RESET_TIMEOUT / 60))
        self.extra_email_context = {"minutes": minutes}
        return super().form_valid(form)


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
            estimated=Sum("estimated_tokens"),
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
