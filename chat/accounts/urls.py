"""Account URLs (``/accounts/``). Password reset is Django's own four views under
``password/reset/``, by Django's own names (its views redirect to each other by them)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.urls import path

from chat.accounts import oidc_urls
from chat.accounts.oidc import SignOut
from chat.accounts.views import LoginView, PasswordResetView, signup

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", SignOut.as_view(), name="logout"),
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
    path("password/reset/", PasswordResetView.as_view(), name="password_reset"),
    path(
        "password/reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("signup/", signup, name="signup"),
]
if settings.OIDC_ISSUER:
    # Single sign-on (chat/accounts/oidc.py); without an issuer its URLs do not exist.
    urlpatterns += oidc_urls.urlpatterns
