"""The sign-in throttle (``chat/accounts/throttle.py``, django-axes): failed sign-ins of one
account from one address lock that pair, many failures from one address lock the address, and
a locked sign-in gets a page saying how long to wait (429), on ``/accounts/login/`` and
``/admin/login/`` alike, even with the right password.

In process (Django's test client, and its ASGI client for the path Daphne takes); the address
is the client's ``REMOTE_ADDR``. ``tests/test_deploy_nginx.py`` tries the same behind nginx.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt  # type: ignore[import-untyped]
from django.contrib.auth.models import User
from django.test import AsyncClient, Client
from django.test.client import RequestFactory
from pytest_django.fixtures import Settings

from chat.accounts.throttle import client_address
from tests.support.waiting import until_sync

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-passphrase-7"
WRONG = "not-the-passphrase"
INVALID = "Please enter a correct username and password"
LOCKED = "Too many failed sign-ins: try again in 15 minutes."


@pytest.fixture
def accounts(settings: Settings) -> Settings:
    """Accounts on, the documented limits (10 per account and address, 50 per address, 15
    minutes), and a fast password hasher: each wrong guess costs a hash."""
    settings.CHAT_REQUIRE_LOGIN = True
    settings.CHAT_LOGIN_FAILURE_LIMIT = 10
    settings.CHAT_LOGIN_ADDRESS_FAILURE_LIMIT = 50
    settings.CHAT_LOGIN_LOCKOUT_MINUTES = 15.0
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


def sign_in(
    client: Client, username: str, password: str, *, address: str = "127.0.0.1", path: str = ""
) -> tuple[int, str]:
    """POST the login form from ``address``: the status and the page."""
    response = client.post(
        path or "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )
    return response.status_code, response.content.decode()


def fail(client: Client, username: str, times: int, **where: str) -> list[int]:
    """``times`` wrong passwords for ``username``: each status."""
    return [sign_in(client, username, WRONG, **where)[0] for _ in range(times)]


def test_the_login_page_states_the_limit(accounts: Settings, client: Client) -> None:
    page = client.get("/accounts/login/").content.decode()
    assert "After 10 failed sign-ins, signing in is paused for 15 minutes." in page
    accounts.CHAT_LOGIN_FAILURE_LIMIT = 0  # the throttle off: nothing to state
    assert "failed sign-ins" not in client.get("/accounts/login/").content.decode()


def test_the_tenth_failure_locks_and_even_the_right_password_waits_for_the_window(
    accounts: Settings, client: Client
) -> None:
    User.objects.create_user("ada", password=PASSWORD)
    for _ in range(9):
        status, page = sign_in(client, "ada", WRONG)
        assert status == 200 and INVALID in page and "Too many" not in page
    tenth = client.post("/accounts/login/", {"username": "ada", "password": WRONG})
    assert tenth.status_code == 429 and LOCKED in tenth.content.decode()
    assert 890 <= int(tenth["Retry-After"]) <= 900
    status, page = sign_in(client, "ada", WRONG)  # the 11th
    assert status == 429 and LOCKED in page and INVALID not in page
    status, page = sign_in(client, "ada", PASSWORD)
    assert status == 429 and LOCKED in page
    assert '<a href="/accounts/login/">Back to sign-in</a>' in page
    assert client.get("/").status_code == 302  # not signed in
    # The window passes (shortened to a second): the right password gets in, and the
    # refusals meanwhile did not extend the lock.
    accounts.CHAT_LOGIN_LOCKOUT_MINUTES = 1 / 60
    until_sync(lambda: sign_in(client, "ada", PASSWORD)[0] == 302, "the lock ended")
    assert client.get("/").status_code == 200


def test_a_lock_holds_one_account_at_one_address(accounts: Settings) -> None:
    for name in ("ada", "grace"):
        User.objects.create_user(name, password=PASSWORD)
    assert fail(Client(), "ada", 10)[-1] == 429
    assert sign_in(Client(), "ada", PASSWORD)[0] == 429
    # Another account from the same address, and the same account from another address.
    assert sign_in(Client(), "grace", PASSWORD)[0] == 302
    assert sign_in(Client(), "ada", PASSWORD, address="10.0.0.2")[0] == 302


def test_an_address_guessing_across_accounts_is_locked(accounts: Settings) -> None:
    accounts.CHAT_LOGIN_ADDRESS_FAILURE_LIMIT = 6
    User.objects.create_user("grace", password=PASSWORD)
    spraying = Client()
    statuses = [
        status
        for name in ("ada", "bob", "carol")
        for status in fail(spraying, name, 2, address="10.6.6.6")
    ]
    assert statuses == [200] * 5 + [429]  # 2 each: no account near its own limit of 10
    status, page = sign_in(Client(), "grace", PASSWORD, address="10.6.6.6")
    assert status == 429 and LOCKED in page
    assert sign_in(Client(), "grace", PASSWORD, address="10.7.7.7")[0] == 302


def test_a_forged_forwarded_for_header_does_not_change_the_address(
    accounts: Settings, client: Client
) -> None:
    """Only ``REMOTE_ADDR`` counts (Daphne sets it from what nginx forwards): a client naming
    a new address per guess in its own header is locked all the same."""
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert client_address(request) == "127.0.0.1"
    statuses = [
        client.post(
            "/accounts/login/",
            {"username": "ada", "password": WRONG},
            headers={"X-Forwarded-For": f"6.6.6.{n}", "X-Real-IP": f"6.6.6.{n}"},
        ).status_code
        for n in range(11)
    ]
    assert statuses == [200] * 9 + [429, 429]


def test_the_admin_login_is_throttled_and_shares_the_count(accounts: Settings) -> None:
    User.objects.create_user("root", password=PASSWORD, is_staff=True, is_superuser=True)
    admin = Client()
    page = admin.get("/admin/login/?next=/admin/").content.decode()
    assert 'name="password"' in page
    statuses = [
        admin.post(
            "/admin/login/?next=/admin/", {"username": "root", "password": WRONG}
        ).status_code
        for _ in range(5)
    ]
    assert statuses == [200] * 5
    # Five more on the app's page lock the same account and address on both.
    assert fail(Client(), "root", 5)[-1] == 429
    refused = admin.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    page = refused.content.decode()
    assert refused.status_code == 429 and LOCKED in page
    assert 'href="/admin/login/?next=/admin/"' in page
    assert admin.get("/admin/").status_code == 302  # not signed in
    assert sign_in(Client(), "root", PASSWORD, address="10.0.0.3", path="/admin/login/")[0] == 302


def test_an_administrator_unlocks_by_deleting_the_attempt(accounts: Settings) -> None:
    """The admin lists the failures (Axes → Access attempts); deleting the row unlocks."""
    User.objects.create_user("ada", password=PASSWORD)
    assert fail(Client(), "ada", 10)[-1] == 429
    boss = Client()
    boss.force_login(User.objects.create_user("boss", is_staff=True, is_superuser=True))
    listing = boss.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "ada" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username="ada")
    deleted = boss.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert sign_in(Client(), "ada", PASSWORD)[0] == 302


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_refusal_is_the_same_page(accounts: Settings) -> None:
    """Daphne runs the middleware asynchronously, where axes hands the lockout page other
    arguments than in the synchronous path: the page is the same."""
    await sync_to_async(User.objects.create_user)("ada", password=PASSWORD)
    client = AsyncClient()
    statuses = []
    for _ in range(10):
        response = await client.post("/accounts/login/", {"username": "ada", "password": WRONG})
        statuses.append(response.status_code)
    assert statuses == [200] * 9 + [429]
    response = await client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert response.status_code == 429 and LOCKED in response.content.decode()
    assert 0 < int(response["Retry-After"]) <= 900
