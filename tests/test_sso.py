"""Single sign-on without a browser (``chat/accounts/oidc.py``): the settings read from the
environment, the system check of a half-configured provider, the refusal rules, which account
a provider's identity is (by ``sub``, never by a mere email), the login page with and without
it, and the throttle's exemption. The whole sign-in, in chromium against a real provider, is in
``tests/test_browser_sso.py``."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import NoReverseMatch, resolve, reverse
from pytest_django.fixtures import Settings

from chat.accounts import oidc
from chat.models import SignOn
from tests.support.processes import SHELL, free_port, manage_in_development
from tests.support.visitor import PASSWORD

# ``manage.py`` in development settings, with no OIDC_* from this process's environment.
manage = partial(manage_in_development, without="OIDC_")


# --- Settings and checks -----------------------------------------------------------------------


def test_the_settings_come_from_the_environment() -> None:
    shown = manage(
        *SHELL,
        "from django.conf import settings as s;"
        "print(s.OIDC_ISSUER, s.OIDC_RP_CLIENT_ID, ','.join(s.OIDC_ALLOWED_DOMAINS),"
        " s.OIDC_GROUPS_CLAIM, ','.join(s.OIDC_ALLOWED_GROUPS), s.OIDC_ONLY, s.OIDC_USE_PKCE,"
        " s.OIDC_RP_SIGN_ALGO, s.AUTHENTICATION_BACKENDS[0], s.AUTHENTICATION_BACKENDS[-1])",
        OIDC_ISSUER="https://id.example.com/realms/staff/",
        OIDC_CLIENT_ID="streamside",
        OIDC_CLIENT_SECRET="a-secret-from-the-environment",
        OIDC_ALLOWED_DOMAINS="@Example.com, corp.example.org",
        OIDC_GROUPS_CLAIM="roles",
        OIDC_ALLOWED_GROUPS="chat-users,admins",
        OIDC_ONLY="1",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [
        "https://id.example.com/realms/staff",  # no trailing slash: compared with "iss"
        "streamside",
        "example.com,corp.example.org",
        "roles",
        "chat-users,admins",
        "True",
        "True",
        "RS256",
        # The throttle's backend still first (it needs the request); single sign-on last.
        "axes.backends.AxesStandaloneBackend",
        "chat.accounts.oidc.SignOnBackend",
    ]


def test_without_an_issuer_single_sign_on_is_off() -> None:
    shown = manage(
        *SHELL,
        "from django.conf import settings as s; from django.urls import reverse;"
        "print(s.OIDC_ONLY, len(s.AUTHENTICATION_BACKENDS));"
        "reverse('oidc_authentication_init')",
        OIDC_ONLY="1",
    )
    assert shown.stdout.split() == ["False", "2"]
    assert "NoReverseMatch" in shown.stderr


def test_signing_out_at_the_provider_widens_form_action_to_it_alone() -> None:
    code = (
        "from django.conf import settings as s;"
        "print(s.OIDC_LOGOUT_AT_PROVIDER, s.OIDC_STORE_ID_TOKEN,"
        " *s.CONTENT_SECURITY_POLICY['DIRECTIVES']['form-action'])"
    )
    on = manage(
        *SHELL, code, OIDC_ISSUER="https://id.example.com/realms/a", OIDC_LOGOUT_AT_PROVIDER="1"
    )
    assert on.stdout.split() == ["True", "True", "'self'", "https://id.example.com"], on.stderr
    off = manage(*SHELL, code, OIDC_ISSUER="https://id.example.com/realms/a")
    assert off.stdout.split() == ["False", "False", "'self'"], off.stderr


def test_the_check_names_a_half_configured_provider() -> None:
    shown = manage("check", OIDC_ISSUER="https://id.example.com", OIDC_CLIENT_ID="streamside")
    assert shown.returncode != 0
    assert "streamside.E101" in shown.stderr and "OIDC_CLIENT_SECRET" in shown.stderr
    ignored = manage("check", OIDC_CLIENT_ID="streamside")
    assert ignored.returncode == 0, ignored.stderr
    assert "streamside.W101" in ignored.stderr + ignored.stdout


def test_a_configured_provider_passes_the_check(settings: Settings) -> None:
    settings.OIDC_ISSUER = "https://id.example.com"
    settings.OIDC_RP_CLIENT_ID = "streamside"
    settings.OIDC_RP_CLIENT_SECRET = "secret-of-the-test"
    settings.CHAT_HTTPS = True
    assert oidc.check_single_sign_on() == []
    settings.OIDC_ISSUER = "http://id.example.com"
    assert [message.id for message in oidc.check_single_sign_on()] == ["streamside.W102"]


# --- Refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domains", "groups", "claims", "expected"),
    [
        pytest.param([], [], {"email": "a@anywhere.net"}, None, id="no-rules"),
        pytest.param(["example.com"], [], {"email": "a@Example.COM"}, None, id="domain-case"),
        pytest.param(["example.com"], [], {"email": "a@evil.com"}, "domain", id="other-domain"),
        pytest.param(
            ["example.com"], [], {"email": "a@example.com.evil.net"}, "domain", id="suffix-trick"
        ),
        pytest.param(["example.com"], [], {}, "domain", id="no-email"),
        pytest.param([], ["chat"], {"groups": ["staff", "chat"]}, None, id="in-a-group"),
        pytest.param([], ["chat"], {"groups": "chat"}, None, id="one-group-as-text"),
        pytest.param([], ["chat"], {"groups": ["staff"]}, "group", id="other-groups"),
        pytest.param([], ["chat"], {}, "group", id="no-groups"),
        pytest.param([], [], {"email_verified": False}, "unverified", id="unverified"),
        pytest.param([], [], {"email_verified": "false"}, "unverified", id="unverified-text"),
        pytest.param([], [], {"email_verified": True}, None, id="verified"),
    ],
)
def test_the_refusal_rules(
    settings: Settings,
    domains: list[str],
    groups: list[str],
    claims: dict[str, Any],
    expected: str | None,
) -> None:
    settings.OIDC_ALLOWED_DOMAINS = domains
    settings.OIDC_ALLOWED_GROUPS = groups
    settings.OIDC_GROUPS_CLAIM = "groups"
    assert oidc.refusal({"sub": "1", **claims}) == expected


# --- Which account -----------------------------------------------------------------------------


@pytest.fixture
def issuer(settings: Settings) -> str:
    settings.OIDC_ISSUER = "https://id.example.com"
    return settings.OIDC_ISSUER


@pytest.mark.django_db
def test_an_identity_is_its_sub_not_its_email(issuer: str) -> None:
    first = oidc.account_for(
        {"sub": "u-1", "email": "ann@example.com", "preferred_username": "ann", "given_name": "Ann"}
    )
    assert (first.username, first.email, first.first_name) == ("ann", "ann@example.com", "Ann")
    assert not first.has_usable_password()
    # The same sub with a new address: the same account, its email updated.
    again = oidc.account_for({"sub": "u-1", "email": "ann.b@example.com"})
    assert again.pk == first.pk and User.objects.get(pk=first.pk).email == "ann.b@example.com"
    # Another sub claiming that address (unverified): a new account, never Ann's.
    other = oidc.account_for(
        {"sub": "u-2", "email": "ann.b@example.com", "preferred_username": "ann"}
    )
    assert other.pk != first.pk and other.username == "ann-2"
    assert SignOn.objects.filter(issuer=issuer).count() == 2
    backend = oidc.SignOnBackend()
    assert list(backend.filter_users_by_claims({"sub": "u-1", "email": "x@y.z"})) == [first]
    assert not backend.filter_users_by_claims({"sub": "u-3", "email": "ann.b@example.com"})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("verified", "taken_over"),
    [pytest.param(True, True, id="verified"), pytest.param(None, False, id="not-said")],
)
def test_an_existing_account_is_taken_over_only_by_a_verified_email(
    issuer: str, verified: bool | None, taken_over: bool
) -> None:
    existing = User.objects.create_user("bob", email="bob@example.com", password="x-long-pass-1")
    claims: dict[str, Any] = {"sub": "b-1", "email": "BOB@example.com", "preferred_username": "bob"}
    if verified is not None:
        claims["email_verified"] = verified
    account = oidc.account_for(claims)
    assert (account.pk == existing.pk) is taken_over
    assert SignOn.objects.get(subject="b-1").user_id == account.pk


@pytest.mark.django_db
def test_usernames_are_cleaned_and_unique(issuer: str) -> None:
    User.objects.create_user("Carol")
    assert oidc.username_for({"preferred_username": "carol"}) == "carol-2"
    assert oidc.username_for({"email": "d.o'neil@example.com"}) == "d.oneil"
    assert oidc.username_for({"preferred_username": "名 字"}) == "名字"
    assert oidc.username_for({}) == "user"
    with pytest.raises(Exception, match="no sub"):
        oidc.account_for({"email": "e@example.com"})


# --- Discovery -----------------------------------------------------------------------------------


def test_an_unreachable_provider_is_said_not_raised(settings: Settings) -> None:
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    oidc.forget_discovery()
    try:
        with pytest.raises(oidc.ProviderUnavailable):
            oidc.endpoints()
    finally:
        oidc.forget_discovery()


def test_named_endpoints_need_no_discovery(settings: Settings) -> None:
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://id.example.com/auth"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://id.example.com/token"
    settings.OIDC_OP_USER_ENDPOINT = "https://id.example.com/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = "https://id.example.com/jwks"
    assert oidc.endpoints().token == "https://id.example.com/token"


# --- The login page --------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_an_issuer_the_login_page_is_as_before(login_required: Settings) -> None:
    page = Client().get("/accounts/login/")
    assert page.status_code == 200
    assert b"Sign in with" not in page.content and b'name="password"' in page.content
    with pytest.raises(NoReverseMatch):
        reverse("oidc_authentication_init")


@pytest.mark.django_db
def test_the_login_page_offers_the_provider(sso_settings: Settings) -> None:
    client = Client()
    page = client.get("/accounts/login/?next=/c/new/")
    text = page.content.decode()
    assert "Sign in with Example ID" in text
    assert 'href="/accounts/oidc/start/?next=/c/new/"' in text
    assert 'name="password"' in text  # beside the password form
    assert "a-client-secret-of-the-unit-tests" not in text

    sso_settings.OIDC_ONLY = True
    only = client.get("/accounts/login/").content.decode()
    assert "Sign in with Example ID" in only and 'name="password"' not in only


@pytest.mark.django_db
def test_with_sso_only_a_posted_password_is_refused(sso_settings: Settings) -> None:
    User.objects.create_user("ada", password=PASSWORD)
    client = Client()
    beside = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert beside.status_code == 302  # passwords beside single sign-on: signed in

    sso_settings.OIDC_ONLY = True
    client = Client()
    refused = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert refused.status_code == 403
    text = refused.content.decode()
    assert "Passwords are not accepted here: use the single sign-on button." in text
    assert "Sign in with Example ID" in text and 'name="password"' not in text
    assert "_auth_user_id" not in client.session  # not signed in
    # The admin's own sign-in keeps passwords, for a break-glass administrator.
    User.objects.filter(username="ada").update(is_staff=True)
    admin = client.post("/admin/login/", {"username": "ada", "password": PASSWORD})
    assert admin.status_code == 302 and "_auth_user_id" in client.session


@pytest.mark.django_db
def test_a_refusal_is_said_once(sso_settings: Settings) -> None:
    client = Client()
    session = client.session
    session[oidc.REFUSAL_KEY] = "group"
    session.save()
    said = client.get("/accounts/login/").content.decode()
    assert "Your account is not in a group allowed to sign in here." in said
    again = client.get("/accounts/login/").content.decode()
    assert "not in a group" not in again


@pytest.mark.django_db
def test_an_unreachable_provider_sends_back_to_the_login_page(sso_settings: Settings) -> None:
    sso_settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    oidc.forget_discovery()
    client = Client()
    try:
        response = client.get("/accounts/oidc/start/")
    finally:
        oidc.forget_discovery()
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    page = client.get("/accounts/login/").content.decode()
    assert "The sign-in provider could not be reached. Please try again later." in page


@pytest.mark.django_db
def test_a_callback_without_a_started_sign_in_fails_cleanly(sso_settings: Settings) -> None:
    client = Client()
    response = client.get("/accounts/oidc/callback/?code=c&state=never-sent")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    page = client.get("/accounts/login/").content.decode()
    assert "Single sign-on did not complete. Please try again." in page


def test_only_the_callback_is_outside_the_throttle(sso_settings: Settings) -> None:
    factory = RequestFactory()
    callback = factory.get("/accounts/oidc/callback/")
    callback.resolver_match = resolve("/accounts/oidc/callback/")
    login = factory.post("/accounts/login/")
    login.resolver_match = resolve("/accounts/login/")
    assert oidc.outside_throttle(callback, {"nonce": "n"})
    assert not oidc.outside_throttle(login, {"username": "a", "password": "b"})
    assert not oidc.outside_throttle(factory.get("/"), None)
