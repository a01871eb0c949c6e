from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.i18n import set_language

from chat.ops.health import healthz


@login_not_required
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico on pages without an icon link (the admin, JSON)."""
    return HttpResponsePermanentRedirect(static("chat/favicon.svg"))


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    # Django's language switcher (the django_language cookie). Not login-only: the sign-in page
    # offers it too. No i18n_patterns: URLs stay the same in every language.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("accounts/", include("chat.accounts.urls")),
    path("s/", include("chat.sharing.urls")),  # share links: public pages and owner actions
    path("", include("chat.urls")),
]
