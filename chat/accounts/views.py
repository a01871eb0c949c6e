"""Accounts: sign-up when the deployment allows it (login, logout and password change are
Django's own views, with templates in the app's style under ``templates/registration/``)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from .live.protocol import SESSION_ENDED, SessionEnded, session_group


def close_sockets_on_logout(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """Signing out closes the sockets that session opened, on every worker: a shared or
    public computer keeps no live view of the chats after "Sign out"."""
    key = request.session.session_key
    layer = get_channel_layer()
    if key and layer is not None:
        async_to_sync(layer.group_send)(session_group(key), SessionEnded(type=SESSION_ENDED))


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Only where ``CHAT_ALLOW_SIGNUP`` is on; elsewhere accounts come from the admin."""
    if not settings.CHAT_ALLOW_SIGNUP:
        raise Http404("Sign-up is not open here: ask an administrator for an account.")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


class LoginView(auth_views.LoginView):
    """Django's login, telling the page whether sign-up is open."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "allow_signup": settings.CHAT_ALLOW_SIGNUP}


urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("signup/", signup, name="signup"),
]
