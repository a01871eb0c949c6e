"""Password reset by email (Django's own views under ``/accounts/password/reset/``): the page
says the same whether or not an account has the address, only a known active account gets an
email, its link sets a password once and within ``PASSWORD_RESET_TIMEOUT``, and the reset ends
the account's other sign-ins and closes their sockets, as a password change does.

In process, with Django's locmem email backend (``mail.outbox``), in English: the Chinese
strings wait for the catalogue (``make install`` compiles it). The environment's defaults
(the console backend) are read the way ``tests/test_deploy.py`` reads settings: ``manage.py``
in a subprocess. nginx's request limit on the reset path is tried in
``tests/test_deploy_nginx.py``.
"""

from __future__ import annotations

import asyncio
import re
from functools import partial

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from pytest_django.fixtures import Settings

from chat.live.protocol import ACCESS_ENDED, user_group
from chat.ops.logsafety import secret_values
from tests.support.processes import SHELL, manage_in_development

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-passphrase-7"
NEW_PASSWORD = "another-long-passphrase-9"
SENT = (
    "If an account has this address, an email with a link to choose a new password is on its way."
)
INVALID = "A reset link works once and for a limited time"


@pytest.fixture
def accounts(settings: Settings) -> Settings:
    """Accounts on, emails kept in ``mail.outbox``, and a fast hasher."""
    settings.CHAT_REQUIRE_LOGIN = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", email="ada@example.com", password=PASSWORD)


def request_reset(client: Client, email: str) -> str:
    """POST the reset form: the page it leads to."""
    response = client.post("/accounts/password/reset/", {"email": email}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [("/accounts/password/reset/done/", 302)]
    return response.content.decode()


def link_in(message: mail.EmailMessage) -> str:
    """The reset link's path, from the email's plain-text body."""
    match = re.search(r"http://testserver(/accounts/password/reset/\S+/\S+/)", str(message.body))
    assert match, message.body
    return match.group(1)


def set_password(client: Client, link: str, password: str) -> str:
    """Follow the link and submit the new password twice: the page it ends on."""
    form = client.get(link, follow=True)
    assert form.status_code == 200
    response = client.post(
        form.redirect_chain[-1][0] if form.redirect_chain else link,
        {"new_password1": password, "new_password2": password},
        follow=True,
    )
    return response.content.decode()


def signs_in(username: str, password: str) -> bool:
    response = Client().post("/accounts/login/", {"username": username, "password": password})
    return response.status_code == 302


def test_the_login_page_links_to_the_reset_form(accounts: Settings, client: Client) -> None:
    page = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/password/reset/"' in page and "Forgot your password?" in page
    form = client.get("/accounts/password/reset/")
    assert form.status_code == 200  # no sign-in needed, with CHAT_REQUIRE_LOGIN on
    assert "Reset your password" in form.content.decode()


def test_a_known_address_gets_one_email_with_a_link(
    accounts: Settings, client: Client, ada: User
) -> None:
    page = request_reset(client, "ADA@example.com")  # addresses match whatever the case
    assert SENT in page
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@example.com"]
    assert message.subject == "Your Streamside password"
    assert message.from_email == accounts.DEFAULT_FROM_EMAIL
    assert '"ada"' in str(message.body)
    assert "The link works once, within 60 minutes." in str(message.body)
    assert link_in(message).startswith("/accounts/password/reset/")


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("nobody@example.com", id="unknown"),
        pytest.param("grace@example.com", id="inactive"),
        pytest.param("linus@example.com", id="no-usable-password"),
    ],
)
def test_an_address_without_a_usable_account_gets_the_same_page_and_no_email(
    accounts: Settings, client: Client, ada: User, email: str
) -> None:
    User.objects.create_user("grace", email="grace@example.com", password=PASSWORD, is_active=False)
    User.objects.create_user("linus", email="linus@example.com")  # unusable password
    known = request_reset(Client(), "ada@example.com")
    mail.outbox.clear()
    unknown = request_reset(client, email)
    assert mail.outbox == []
    # The same page either way, apart from the CSRF tokens (new to each client).
    token = re.compile(r"\b[A-Za-z0-9]{64}\b")
    assert token.sub("", unknown) == token.sub("", known)


def test_the_link_sets_a_new_password_once(accounts: Settings, client: Client, ada: User) -> None:
    request_reset(client, "ada@example.com")
    link = link_in(mail.outbox[0])
    page = set_password(client, link, NEW_PASSWORD)
    assert "Your new password is set" in page
    assert signs_in("ada", NEW_PASSWORD)
    assert not signs_in("ada", PASSWORD)
    # The link is spent: the password it was made for is gone.
    again = Client().get(link, follow=True).content.decode()
    assert INVALID in again and "new_password1" not in again
    assert 'href="/accounts/password/reset/"' in again  # ask for a new one


@pytest.mark.parametrize(
    ("link", "timeout"),
    [
        pytest.param("/accounts/password/reset/{uid}/not-a-token/", 3600, id="forged-token"),
        pytest.param("/accounts/password/reset/MTIzNDU2/{token}/", 3600, id="other-user"),
        # Every token is past a timeout below 0 (the setting refuses one from the environment).
        pytest.param("/accounts/password/reset/{uid}/{token}/", -1, id="expired"),
    ],
)
def test_a_forged_or_expired_link_gets_the_invalid_link_page(
    accounts: Settings, client: Client, ada: User, link: str, timeout: int
) -> None:
    request_reset(client, "ada@example.com")
    _, _, _, _, uid, token, _ = link_in(mail.outbox[0]).split("/")
    accounts.PASSWORD_RESET_TIMEOUT = timeout
    page = Client().get(link.format(uid=uid, token=token), follow=True).content.decode()
    assert INVALID in page and "This link does not work" in page
    assert "new_password1" not in page
    ada.refresh_from_db()
    assert ada.check_password(PASSWORD)


@pytest.mark.django_db(transaction=True)
def test_a_reset_ends_the_other_sign_ins_and_closes_their_sockets(accounts: Settings) -> None:
    """As for a password change: the old session is signed out, and the user's sockets in
    every session are told their access ended (``chat/accounts/signals.py``)."""
    ada = User.objects.create_user("ada", email="ada@example.com", password=PASSWORD)
    elsewhere = Client()
    elsewhere.force_login(ada)
    assert elsewhere.get("/").status_code == 200
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(ada.pk), channel)

    client = Client()
    request_reset(client, "ada@example.com")
    set_password(client, link_in(mail.outbox[0]), NEW_PASSWORD)

    message = async_to_sync(asyncio.wait_for)(layer.receive(channel), 5)
    # keep="": the resetting browser was signed out, so no session's sockets are spared.
    assert message == {"type": ACCESS_ENDED, "reason": "password", "keep": ""}
    signed_out = elsewhere.get("/")
    assert signed_out.status_code == 302 and signed_out["Location"].startswith("/accounts/login/")


# ``manage.py`` in development settings, with no EMAIL_* from this process's environment.
manage = partial(manage_in_development, without="EMAIL_")


def test_by_default_emails_go_to_the_console() -> None:
    shown = manage(
        *SHELL,
        "from django.conf import settings as s;"
        "print(s.EMAIL_BACKEND, s.EMAIL_TIMEOUT, s.PASSWORD_RESET_TIMEOUT, s.EMAIL_USE_TLS)",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [
        "django.core.mail.backends.console.EmailBackend",
        "10.0",
        "3600",
        "False",
    ]


def test_the_mail_settings_come_from_the_environment() -> None:
    shown = manage(
        *SHELL,
        "from django.conf import settings as s;"
        "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_USE_TLS, s.DEFAULT_FROM_EMAIL)",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT="587",
        EMAIL_USE_TLS="1",
        DEFAULT_FROM_EMAIL="chat@example.com",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.com",
        "587",
        "True",
        "chat@example.com",
    ]
    refused = manage("check", EMAIL_USE_TLS="1", EMAIL_USE_SSL="1")
    assert refused.returncode != 0
    assert "EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive" in refused.stderr


def test_the_mail_password_is_blanked_out_of_the_logs() -> None:
    assert secret_values({"EMAIL_HOST_PASSWORD": "s3cret-smtp-pass", "EMAIL_HOST": "smtp.x"}) == [
        "s3cret-smtp-pass"
    ]
