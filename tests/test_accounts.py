"""Accounts: login required when configured, sign-up only when open, and each user's
conversations their own on every URL (404 for anyone else's id)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from chat.models import ComparisonRun, Conversation, Message
from tests.support.visitor import PASSWORD, client_signed_in

pytestmark = pytest.mark.django_db


def conversation_of(user: User) -> Conversation:
    conversation = Conversation.objects.create(user=user, model="qwen-plus", title="Secret plans")
    Message.objects.create(conversation=conversation, role="user", content="my secret")
    return conversation


PAGES = ["/", "/c/{id}/", "/c/{id}/export.json", "/compare/", "/compare/history/"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_login(login_required: Settings, client: Client, path: str) -> None:
    response = client.get(path.format(id=1))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_sign_in_then_chat_then_sign_out(login_required: Settings, client: Client) -> None:
    User.objects.create_user("ada", password=PASSWORD)
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in" in page and "Accounts are created by your administrator." in page
    wrong = client.post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert "Please enter a correct username and password" in wrong.content.decode()
    response = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    created = client.post("/c/new/")
    conversation = Conversation.objects.get()
    assert created["Location"] == f"/c/{conversation.pk}/"
    assert conversation.user is not None and conversation.user.username == "ada"
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Signed in as <strong>ada</strong>" in page
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_password_change(login_required: Settings) -> None:
    client, user = client_signed_in("grace")
    response = client.post(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "another-long-passphrase-9",
            "new_password2": "another-long-passphrase-9",
        },
    )
    assert response["Location"] == "/accounts/password/done/"
    user.refresh_from_db()
    assert user.check_password("another-long-passphrase-9")


def test_sign_up_only_when_open(login_required: Settings, client: Client) -> None:
    assert client.get("/accounts/signup/").status_code == 404
    login_required.CHAT_ALLOW_SIGNUP = True
    assert "Create one" in client.get("/accounts/login/").content.decode()
    response = client.post(
        "/accounts/signup/",
        {"username": "linus", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # signed in straight away
    assert User.objects.filter(username="linus").exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/c/{id}/"),
        ("get", "/c/{id}/export.json"),
        ("post", "/c/{id}/settings/"),
        ("post", "/c/{id}/rename/"),
        ("post", "/c/{id}/delete/"),
        ("get", "/compare/{run}/"),
        ("get", "/compare/{run}.json"),
        ("get", "/compare/{run}.csv"),
    ],
)
def test_another_users_ids_are_not_found(login_required: Settings, method: str, path: str) -> None:
    _, owner = client_signed_in("owner")
    mine = conversation_of(owner)
    run = ComparisonRun.objects.create(
        user=owner,
        prompt="secret prompt",
        model="qwen-plus",
        upstream="x",
        stream_conversation=conversation_of(owner),
        nostream_conversation=conversation_of(owner),
    )
    intruder, _ = client_signed_in("intruder")
    response = getattr(intruder, method)(
        path.format(id=mine.pk, run=run.pk), {"title": "pwned", "model": "qwen-turbo"}
    )
    assert response.status_code == 404
    assert b"secret" not in response.content
    mine.refresh_from_db()
    assert mine.title == "Secret plans" and mine.model == "qwen-plus"
    assert Message.objects.filter(conversation=mine).count() == 1
    # Nor do they appear in the intruder's own lists.
    assert b"Secret plans" not in intruder.get("/").content
    assert b"secret prompt" not in intruder.get("/compare/history/").content


def test_without_login_required_the_session_owns_the_demo(client: Client) -> None:
    response = client.post("/c/new/")
    assert response.status_code == 302
    conversation = Conversation.objects.get()
    assert conversation.user is None and conversation.session_key
