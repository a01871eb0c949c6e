"""Account URLs (``/accounts/``)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from chat.accounts.views import LoginView, signup

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
