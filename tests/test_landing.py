"""The landing page's message box: ``POST /c/new/`` with ``message`` creates the chat and hands
the text to its page exactly once (the page's script sends it over the socket)."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from chat.conversations import landing
from chat.models import Conversation

pytestmark = pytest.mark.django_db


def pending_on(page: str) -> str | None:
    """The text the composer will send on connect, as the page's script reads it."""
    marker = 'data-pending-message="'
    if marker not in page:
        return None
    start = page.index(marker) + len(marker)
    return html.unescape(page[start : page.index('"', start)])


def test_the_landing_has_the_message_box_and_still_the_start_button(client: Client) -> None:
    page = client.get("/").content.decode()
    assert '<form id="landing" class="landing" method="post" action="/c/new/">' in page
    assert '<label class="visually-hidden" for="message">Message</label>' in page
    assert '<textarea id="message" name="message"' in page
    assert '<select name="model">' in page
    assert "Start a new chat" in page


def test_a_message_opens_its_new_chat_which_sends_it_once(client: Client) -> None:
    response = client.post("/c/new/", {"message": '  Hello <b>"there"</b>\r\nsecond line  '})
    conversation = Conversation.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/c/{conversation.pk}/"
    assert not conversation.messages.exists()  # the socket saves it, as for any send

    first = client.get(f"/c/{conversation.pk}/")
    assert pending_on(first.content.decode()) == 'Hello <b>"there"</b>\nsecond line'
    assert "no-store" in first["Cache-Control"]  # Back must not replay it from the cache
    again = client.get(f"/c/{conversation.pk}/").content.decode()
    assert pending_on(again) is None


def test_a_message_kept_for_one_chat_is_not_sent_in_another(client: Client) -> None:
    other = Conversation.objects.get(pk=int(client.post("/c/new/")["Location"].split("/")[2]))
    other.messages.create(role="user", content="an older chat")
    client.post("/c/new/", {"message": "for the new one"})
    new = Conversation.objects.exclude(pk=other.pk).get()
    assert pending_on(client.get(f"/c/{other.pk}/").content.decode()) is None
    assert pending_on(client.get(f"/c/{new.pk}/").content.decode()) == "for the new one"


def test_a_message_whose_page_never_came_is_dropped(client: Client) -> None:
    client.post("/c/new/", {"message": "long ago"})
    conversation = Conversation.objects.get()
    session = client.session
    session[landing.PENDING_SESSION_KEY]["at"] -= landing.PENDING_FOR_S + 1
    session.save()
    assert pending_on(client.get(f"/c/{conversation.pk}/").content.decode()) is None


@pytest.mark.parametrize(
    ("message", "alert"),
    [
        pytest.param("", "Type a message first.", id="empty"),
        pytest.param(" \r\n ", "Type a message first.", id="blank"),
        pytest.param("x" * 50, "That message is too long (50 characters; at most 40).", id="long"),
    ],
)
def test_a_refused_message_creates_nothing_and_keeps_the_text(
    client: Client, settings: Settings, message: str, alert: str
) -> None:
    settings.CHAT_MAX_MESSAGE_CHARS = 40
    response = client.post("/c/new/", {"message": message})
    page = response.content.decode()
    assert response.status_code == 200
    assert f'<p class="alert" role="alert">{alert}</p>' in page
    assert 'aria-invalid="true"' in page
    assert not Conversation.objects.exists()
    if message.strip():
        assert f">{message}</textarea>" in page


def test_the_chosen_model_is_the_new_chats(client: Client) -> None:
    client.post("/c/new/", {"message": "hi", "model": "qwen-turbo"})
    assert Conversation.objects.get().model == "qwen-turbo"


def test_an_unknown_model_creates_nothing(client: Client) -> None:
    page = client.post("/c/new/", {"message": "hi", "model": "no-such-model"}).content.decode()
    assert "Unknown model “no-such-model”." in page
    assert not Conversation.objects.exists()


def test_with_login_required_it_is_the_signed_in_users(settings: Settings) -> None:
    settings.CHAT_REQUIRE_LOGIN = True
    stranger = Client()
    assert stranger.post("/c/new/", {"message": "hi"}).status_code == 302
    assert not Conversation.objects.exists()

    user = User.objects.create_user("ada", password="a-long-enough-passphrase-7")
    client = Client()
    client.force_login(user)
    response = client.post("/c/new/", {"message": "hi"})
    conversation = Conversation.objects.get()
    assert conversation.user_id == user.pk
    assert response["Location"] == f"/c/{conversation.pk}/"
    assert pending_on(client.get(response["Location"]).content.decode()) == "hi"
