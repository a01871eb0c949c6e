"""Single sign-on URLs (``/accounts/oidc/``), added to ``chat.accounts.urls`` only when
``OIDC_ISSUER`` is set. The names are the library's own: its views reverse them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from chat.accounts.oidc import CALLBACK_NAME, SignOnCallback, SignOnStart

urlpatterns = [
    path("oidc/start/", login_not_required(SignOnStart.as_view()), name="oidc_authentication_init"),
    path("oidc/callback/", login_not_required(SignOnCallback.as_view()), name=CALLBACK_NAME),
]
