"""Closing sockets never costs the change that asked for it: with the channel layer's Redis
unreachable (a real refused connection), a password change, a deactivation and a deleted
session all go through, each logging a warning; the sockets' periodic check closes them later.

In process (Django's test client), with real commits: messages are sent once the transaction
commits, and inside a request once its response is ready.
"""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from pytest_django.fixtures import Settings

from tests.support.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-enough-passphrase-7"
NEW_PASSWORD = "another-long-passphrase-9"
WARNING = "could not tell the sockets"


@pytest.fixture
def redis_away(settings: Settings) -> Settings:
    """Accounts on, and a Redis channel layer pointed at a port nobody listens on."""
    settings.CHAT_REQUIRE_LOGIN = True
    address = f"redis://127.0.0.1:{free_port()}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": address}]},
        }
    }
    return settings


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_a_password_change_goes_through_with_redis_away(
    redis_away: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    user = User.objects.create_user("ada", password=PASSWORD)
    client = Client()
    client.force_login(user)
    caplog.clear()  # the test client's own login cycled a session key already
    new = {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    with caplog.at_level(logging.WARNING, logger="chat.accounts.signals"):
        response = client.post("/accounts/password/", {"old_password": PASSWORD, **new})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert client.get("/accounts/password/").status_code == 200  # still signed in, new key
    # One for the user's other sessions, one for this session's renewed key.
    assert len(warnings(caplog)) == 2, caplog.text


def test_deactivating_and_deleting_sessions_go_through_with_redis_away(
    redis_away: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    user = User.objects.create_user("bob", password=PASSWORD)
    client = Client()
    client.force_login(user)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chat.accounts.signals"):
        user.is_active = False
        user.save()
        Session.objects.all().delete()
    user.refresh_from_db()
    assert not user.is_active and not Session.objects.exists()
    assert len(warnings(caplog)) == 2, caplog.text
    assert client.get("/accounts/password/").status_code == 302  # signed out: to the login
