"""Single sign-on with OpenID Connect (mozilla-django-oidc), on only when ``OIDC_ISSUER`` is set.

- The provider's endpoints come from ``<issuer>/.well-known/openid-configuration``, fetched at
  the first sign-in (never at start: a provider down must not stop the site, nor ``manage.py``)
  with ``OIDC_TIMEOUT``, and kept; a failed fetch is tried again at the next sign-in.
  ``OIDC_OP_*_ENDPOINT`` variables name endpoints by hand instead.
- The authorization-code flow with PKCE, state and nonce; the ID token's RS256 signature is
  checked against the provider's JWKS, and its issuer and audience here (the library checks
  neither), and the userinfo's ``sub`` must be the ID token's.
- An account is found by the provider's ``sub`` (``SignOn``), never by email: an address at
  the provider may be edited or reused. At the first sign-in an existing account with the
  same email is taken over only if the provider says the address is verified and exactly one
  unlinked account has it; otherwise a new account is made (username from
  ``preferred_username`` or the email, made unique, password unusable).
- Refused (email domain or group not allowed, email not verified): no account is made, and the
  login page says why (a code kept in the session, worded there in the user's language).
- Not counted by the sign-in throttle: a failed single sign-on is no password guess, and a
  refused one must not lock an office's address out of password sign-in.
- Signing out (``SignOut``, every session's) ends the session here, which closes its sockets
  (``accounts.signals``); with ``OIDC_LOGOUT_AT_PROVIDER`` it goes on to the provider's
  ``end_session_endpoint`` (RP-Initiated Logout) and back to the login page.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.core import checks
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend  # type: ignore[import-untyped]
from mozilla_django_oidc.views import (  # type: ignore[import-untyped]
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from chat.models import SignOn

logger = logging.getLogger(__name__)

CALLBACK_NAME = "oidc_authentication_callback"
# Why the last single sign-on of this browser failed, for the login page to say once.
REFUSAL_KEY = "streamside_sso_refusal"
REFUSALS = {
    "domain": _("Your email address is not in a domain allowed to sign in here."),
    "group": _("Your account is not in a group allowed to sign in here."),
    "unverified": _("Your email address is not verified at the sign-in provider."),
    "inactive": _("This account is inactive."),
    "unavailable": _("The sign-in provider could not be reached. Please try again later."),
    "failed": _("Single sign-on did not complete. Please try again."),
    "passwords": _("Passwords are not accepted here: use the single sign-on button."),
}
USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be had, or is not this issuer's."""


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    userinfo: str
    jwks: str
    end_session: str = ""


_lock = threading.Lock()
_discovered: dict[str, Any] | None = None


def endpoints() -> Endpoints:
    """The provider's endpoints: those named in the settings, the rest discovered (once)."""
    named = (
        settings.OIDC_OP_AUTHORIZATION_ENDPOINT,
        settings.OIDC_OP_TOKEN_ENDPOINT,
        settings.OIDC_OP_USER_ENDPOINT,
        settings.OIDC_OP_JWKS_ENDPOINT,
    )
    if all(named):
        return Endpoints(*named)
    document = _discovery()
    keys = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    found = [mine or str(document.get(key) or "") for mine, key in zip(named, keys, strict=True)]
    if not all(found):
        raise ProviderUnavailable("the discovery document lacks an endpoint")
    authorization, token, userinfo, jwks = found
    end_session = str(document.get("end_session_endpoint") or "")
    return Endpoints(authorization, token, userinfo, jwks, end_session)


def _discovery() -> dict[str, Any]:
    global _discovered
    with _lock:
        if _discovered is None:
            _discovered = fetch_discovery(settings.OIDC_ISSUER, settings.OIDC_TIMEOUT)
        return _discovered


def forget_discovery() -> None:
    """Fetch the document again at the next sign-in (tests; a provider that moved)."""
    global _discovered
    with _lock:
        _discovered = None


def fetch_discovery(issuer: str, timeout: float) -> dict[str, Any]:
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=timeout, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        logger.warning("single sign-on: no discovery document at %s: %s", url, exc)
        raise ProviderUnavailable(url) from exc
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        # OpenID Connect Discovery 4.3: a document naming another issuer must not be used.
        logger.warning("single sign-on: %s is not the discovery document of %s", url, issuer)
        raise ProviderUnavailable(url)
    return document


def refuse(request: HttpRequest, reason: str) -> None:
    """Keep why this sign-on failed, for the login page (the first reason given wins)."""
    request.session.setdefault(REFUSAL_KEY, reason)


def refusal(claims: dict[str, Any]) -> str | None:
    """Why these claims may not sign in (a ``REFUSALS`` key), or None when they may."""
    email = str(claims.get("email") or "")
    if str(claims.get("email_verified", "")).lower() == "false":
        return "unverified"
    domains = settings.OIDC_ALLOWED_DOMAINS
    if domains and ("@" not in email or email.rpartition("@")[2].lower() not in domains):
        return "domain"
    allowed = settings.OIDC_ALLOWED_GROUPS
    if allowed:
        held = claims.get(settings.OIDC_GROUPS_CLAIM) or []
        held = [held] if isinstance(held, str) else held
        if not {str(group) for group in held} & set(allowed):
            return "group"
    return None


def username_for(claims: dict[str, Any]) -> str:
    """A new account's username: the provider's ``preferred_username``, else the email's local
    part, cleaned to Django's characters and made unique with a ``-2``, ``-3`` suffix."""
    email = str(claims.get("email") or "")
    wanted = str(claims.get("preferred_username") or email.partition("@")[0])
    base = USERNAME_UNSAFE.sub("", wanted)[:140] or "user"
    users = get_user_model()._default_manager
    candidate, number = base, 2
    while users.filter(username__iexact=candidate).exists():
        candidate, number = f"{base}-{number}", number + 1
    return candidate


def account_for(claims: dict[str, Any]) -> Any:
    """The account of these (allowed) claims: the one linked to their ``sub``, else an
    existing one taken over by verified email, else a new one; linked from now on."""
    try:
        return _account_for(claims)
    except IntegrityError:
        # Another sign-in made the same link or took the same username meanwhile: once more
        # finds that link, or picks the next free name.
        return _account_for(claims)


def _account_for(claims: dict[str, Any]) -> Any:
    subject = str(claims.get("sub") or "")
    if not subject:
        raise SuspiciousOperation("the provider's claims have no sub")
    issuer = settings.OIDC_ISSUER
    email = str(claims.get("email") or "")
    with transaction.atomic():
        link = SignOn.objects.select_related("user").filter(issuer=issuer, subject=subject)
        found = link.first()
        if found is not None:
            user = found.user
            if email and user.email != email:
                user.email = email
                user.save(update_fields=["email"])
            return user
        user = _taken_over(claims) or _created(claims)
        SignOn.objects.create(user=user, issuer=issuer, subject=subject)
        return user


def _taken_over(claims: dict[str, Any]) -> Any:
    email = str(claims.get("email") or "")
    if not email or claims.get("email_verified") is not True:
        return None
    users = get_user_model()._default_manager.filter(email__iexact=email, sign_ons__isnull=True)
    found = list(users[:2])
    return found[0] if len(found) == 1 else None


def _created(claims: dict[str, Any]) -> Any:
    user = get_user_model()._default_manager.create_user(
        username_for(claims), email=str(claims.get("email") or "")
    )
    user.first_name = str(claims.get("given_name") or "")[:150]
    user.last_name = str(claims.get("family_name") or "")[:150]
    user.save(update_fields=["first_name", "last_name"])
    return user


class SignOnBackend(OIDCAuthenticationBackend):
    """The library's backend, answering only the callback's sign-in (not passwords)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django makes a backend for every request of a signed-in user (``get_user``): no
        # discovery here, the endpoints are found in ``authenticate``.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = "RS256"
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        """Run by the callback view (its credentials carry the ``nonce``)."""
        if request is None or "nonce" not in kwargs or not settings.OIDC_ISSUER:
            return None
        try:
            found = endpoints()
        except ProviderUnavailable:
            refuse(request, "unavailable")
            return None
        self.OIDC_OP_TOKEN_ENDPOINT = found.token
        self.OIDC_OP_USER_ENDPOINT = found.userinfo
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks
        try:
            return super().authenticate(request, **kwargs)
        except requests.RequestException as exc:
            logger.warning("single sign-on: the provider failed: %s", exc)
            refuse(request, "unavailable")
        except SuspiciousOperation as exc:
            logger.warning("single sign-on refused: %s", exc)
            refuse(request, "failed")
        return None

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        """The ID token (signature and nonce checked by the library) must be this issuer's and
        for this client; the userinfo must be about its ``sub``."""
        if str(payload.get("iss", "")).rstrip("/") != settings.OIDC_ISSUER:
            raise SuspiciousOperation("the ID token is from another issuer")
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the ID token is for another client")
        claims = super().get_userinfo(access_token, id_token, payload)
        if str(claims.get("sub")) != str(payload.get("sub")):
            raise SuspiciousOperation("the userinfo is about another subject")
        return {**payload, **claims}

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        reason = refusal(claims)
        if reason is not None:
            logger.info("single sign-on refused (%s) for sub %s", reason, claims.get("sub"))
            refuse(self.request, reason)
            return None
        return account_for(claims)

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        """By ``sub`` only (the library's default matches the email)."""
        return self.UserModel._default_manager.filter(
            sign_ons__issuer=settings.OIDC_ISSUER, sign_ons__subject=str(claims.get("sub"))
        )


class SignOnStart(OIDCAuthenticationRequestView):
    """``/accounts/oidc/start/``: off to the provider, with state, nonce and PKCE kept in the
    session."""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            found = endpoints()
        except ProviderUnavailable:
            refuse(request, "unavailable")
            return HttpResponseRedirect(reverse("login"))
        self.OIDC_OP_AUTH_ENDPOINT = found.authorization
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        response: HttpResponse = super().get(request)
        return response


class SignOnCallback(OIDCAuthenticationCallbackView):
    """``/accounts/oidc/callback/``: the provider's answer; a failure goes back to the login
    page, which says why."""

    @property
    def failure_url(self) -> str:
        return reverse("login")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            response: HttpResponse = super().get(request)
        except SuspiciousOperation as exc:
            # A state this session never sent (an old or replayed callback): start again.
            logger.warning("single sign-on callback refused: %s", exc)
            return self.login_failure()
        return response

    def login_failure(self) -> HttpResponse:
        user = getattr(self, "user", None)
        refuse(self.request, "inactive" if user is not None and not user.is_active else "failed")
        response: HttpResponse = super().login_failure()
        return response


def provider_logout_url(request: HttpRequest) -> str:
    """Where signing out goes next when ``OIDC_LOGOUT_AT_PROVIDER`` is on and this session
    signed in through the provider: its ``end_session_endpoint`` (OpenID Connect RP-Initiated
    Logout), which comes back to the login page. Empty otherwise, or if the provider has none."""
    id_token = request.session.get("oidc_id_token")
    if not settings.OIDC_LOGOUT_AT_PROVIDER or not id_token:
        return ""
    try:
        end_session = endpoints().end_session
    except ProviderUnavailable:
        return ""
    if not end_session:
        return ""
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
        }
    )
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"


class SignOut(auth_views.LogoutView):
    """``/accounts/logout/``: Django's sign-out (the session ends, its sockets close:
    ``accounts.signals``), then on to the provider's own sign-out when so configured."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        away = provider_logout_url(request)  # read before the session is flushed
        response: HttpResponse = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(away) if away else response


def login_context(request: HttpRequest) -> dict[str, Any]:
    """What the login page shows of single sign-on: the button, whether the password form is
    hidden, and why the last attempt failed (said once)."""
    if not settings.OIDC_ISSUER:
        return {}
    code = request.session.pop(REFUSAL_KEY, None)
    return {
        "sso": {
            "name": settings.OIDC_PROVIDER_NAME,
            "only": settings.OIDC_ONLY,
            "refusal": REFUSALS.get(code) if code else None,
        }
    }


def refusal_of_passwords(request: HttpRequest) -> dict[str, Any] | None:
    """With ``OIDC_ONLY``, the login page's context for a password posted anyway (the form is
    hidden, not gone: a crafted POST must not sign in); None when passwords are accepted. The
    admin's own sign-in keeps passwords, for a break-glass administrator."""
    if not (settings.OIDC_ISSUER and settings.OIDC_ONLY):
        return None
    context = login_context(request)
    context["sso"]["refusal"] = REFUSALS["passwords"]
    return context


def outside_throttle(request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
    """``AXES_WHITELIST_CALLABLE``: the single sign-on callback is neither checked nor counted
    by the password throttle (the provider throttles its own password form)."""
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name == CALLBACK_NAME


@checks.register(checks.Tags.security, deploy=False)
def check_single_sign_on(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A half-configured single sign-on: a button that can only fail, or settings ignored."""
    found: list[checks.CheckMessage] = []
    if settings.OIDC_ISSUER:
        missing = [
            name
            for name, value in (
                ("OIDC_CLIENT_ID", settings.OIDC_RP_CLIENT_ID),
                ("OIDC_CLIENT_SECRET", settings.OIDC_RP_CLIENT_SECRET),
            )
            if not value
        ]
        if missing:
            found.append(
                checks.Error(
                    f"OIDC_ISSUER is set but {' and '.join(missing)} not: single sign-on "
                    "cannot work.",
                    hint="Set the client's id and secret registered at the provider.",
                    id="streamside.E101",
                )
            )
        if settings.CHAT_HTTPS and not settings.OIDC_ISSUER.startswith("https://"):
            found.append(
                checks.Warning(
                    "OIDC_ISSUER is not an https:// URL: tokens would travel unencrypted.",
                    id="streamside.W102",
                )
            )
    else:
        given = [
            name
            for name, value in (
                ("OIDC_CLIENT_ID", settings.OIDC_RP_CLIENT_ID),
                ("OIDC_CLIENT_SECRET", settings.OIDC_RP_CLIENT_SECRET),
                ("OIDC_ONLY", settings.OIDC_ONLY_REQUESTED),
            )
            if value
        ]
        if given:
            found.append(
                checks.Warning(
                    f"{', '.join(given)} set without OIDC_ISSUER: single sign-on is off.",
                    hint="Set OIDC_ISSUER to the provider's issuer URL.",
                    id="streamside.W101",
                )
            )
    return found
