"""Pages and forms through Django's test client: ownership, settings, rename, delete, export."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from chat.conversations.work import purge_deleted
from chat.models import Conversation, Message
from chat.rendering.fragments import MessageView, render_message

pytestmark = pytest.mark.django_db


def new_chat(client: Client) -> Conversation:
    response = client.post("/c/new/")
    assert response.status_code == 302
    return Conversation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


def test_first_visit_invites_a_new_chat(client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert b"Start a new chat" in page.content


def test_the_page_has_the_chat_contract(client: Client) -> None:
    conversation = new_chat(client)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert 'role="log"' in page
    assert '<textarea id="message" name="message"' in page
    assert '<label class="visually-hidden" for="message">Message</label>' in page
    assert ">Send</button>" in page
    assert f'ws-connect="/ws/c/{conversation.pk}/"' in page
    assert "(offline simulator)" not in page  # tests point LLM_API_BASE elsewhere


def test_index_opens_the_newest_conversation(client: Client) -> None:
    older = new_chat(client)
    Message.objects.create(conversation=older, role="user", content="hi")
    newer = new_chat(client)
    assert newer != older
    assert client.get("/")["Location"] == f"/c/{newer.pk}/"


def test_new_chat_reuses_an_untouched_one(client: Client) -> None:
    first = new_chat(client)
    assert new_chat(client) == first
    assert Conversation.objects.count() == 1


def test_history_shows_messages_in_order_with_their_status(client: Client) -> None:
    conversation = new_chat(client)
    Message.objects.create(conversation=conversation, role="user", content="Hello <b>there</b>")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="**Hi**",
        status="error",
        error_message="Request timed out, please try again later.",
    )
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert page.index('data-role="user"') < page.index('data-role="assistant"')
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in page
    assert "<strong>Hi</strong>" in page
    assert 'data-status="error"' in page and "Request timed out" in page
    assert ">Retry</button>" in page


def test_a_streaming_answer_is_busy_for_screen_readers() -> None:
    """The log announces the finished answer once, not every token while it grows."""
    live = render_message(MessageView(id=1, role="assistant", status="streaming", content="Hal"))
    done = render_message(MessageView(id=1, role="assistant", status="complete", content="Half"))
    assert 'aria-busy="true"' in live and "aria-busy" not in done


def test_an_orphaned_streaming_answer_is_shown_as_interrupted(client: Client) -> None:
    conversation = new_chat(client)
    Message.objects.create(conversation=conversation, role="user", content="Hi")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content="Half", status="streaming"
    )
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    answer.refresh_from_db()
    assert answer.status == "error" and answer.error_kind == "interrupted"
    assert answer.content == "Half"
    assert "restarted before this answer finished" in page


def test_settings_change_model_stream_and_system_prompt(client: Client) -> None:
    conversation = new_chat(client)
    response = client.post(
        f"/c/{conversation.pk}/settings/",
        {"model": "qwen-turbo", "system_prompt": "Be brief."},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert b'id="settings"' in response.content and b"<html" not in response.content
    conversation.refresh_from_db()
    assert (conversation.model, conversation.stream, conversation.system_prompt) == (
        "qwen-turbo",
        False,
        "Be brief.",
    )


def test_unknown_model_is_refused_and_nothing_else_is_lost(client: Client) -> None:
    conversation = new_chat(client)
    response = client.post(
        f"/c/{conversation.pk}/settings/",
        {"model": "gpt-nope", "stream": "on", "system_prompt": "Kept"},
        headers={"HX-Request": "true"},
    )
    assert "Unknown model" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.model == "qwen-plus" and conversation.system_prompt == "Kept"


def test_rename_and_empty_title(client: Client) -> None:
    conversation = new_chat(client)
    client.post(f"/c/{conversation.pk}/rename/", {"title": "  Trip   plans "})
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"
    page = client.post(f"/c/{conversation.pk}/rename/", {"title": "   "}, follow=True)
    assert "A title cannot be empty." in page.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"


def test_delete_removes_the_conversation_and_its_messages(client: Client) -> None:
    """Gone from the owner's view at once; gone from the database once purged (Undo until
    then: tests/test_conversation_work.py)."""
    conversation = new_chat(client)
    Message.objects.create(conversation=conversation, role="user", content="bye")
    response = client.post(f"/c/{conversation.pk}/delete/")
    assert response.status_code == 302
    assert client.get(f"/c/{conversation.pk}/").status_code == 404
    purge_deleted(timedelta(0))
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_export_has_the_raw_text(client: Client) -> None:
    conversation = new_chat(client)
    Message.objects.create(conversation=conversation, role="user", content="<script>1</script>")
    data = client.get(f"/c/{conversation.pk}/export.json").json()
    assert data["messages"][0]["content"] == "<script>1</script>"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/c/{id}/"),
        ("get", "/c/{id}/export.json"),
        ("post", "/c/{id}/settings/"),
        ("post", "/c/{id}/rename/"),
        ("post", "/c/{id}/delete/"),
    ],
)
def test_someone_elses_conversation_is_404(client: Client, method: str, path: str) -> None:
    conversation = new_chat(client)
    stranger = Client()
    response = getattr(stranger, method)(path.format(id=conversation.pk))
    assert response.status_code == 404
    assert Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.parametrize("number", [2**63, 2**64 + 5, 10**30])
def test_an_id_past_the_databases_integers_is_404(client: Client, number: int) -> None:
    """Not a database error: no row can have it."""
    new_chat(client)
    assert client.get(f"/c/{number}/").status_code == 404
    assert client.get(f"/c/{number}/export.json").status_code == 404


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/c/new/", {}),
        ("/c/{id}/settings/", {"model": "qwen-turbo", "system_prompt": "forged"}),
        ("/c/{id}/rename/", {"title": "forged"}),
        ("/c/{id}/delete/", {}),
        ("/accounts/logout/", {}),
        ("/accounts/login/", {"username": "x", "password": "y"}),
    ],
)
def test_every_form_needs_csrf_and_a_forged_post_changes_nothing(
    path: str, data: dict[str, str]
) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/")
    token = client.cookies["csrftoken"].value
    made = client.post("/c/new/", headers={"X-CSRFToken": token})  # as htmx sends it
    assert page.status_code == 200 and made.status_code == 302
    conversation = Conversation.objects.get()
    before = Conversation.objects.values().get()
    forged = client.post(path.format(id=conversation.pk), data)  # no token: another site
    assert forged.status_code == 403
    assert Conversation.objects.values().get() == before


def test_pages_send_a_strict_content_security_policy(client: Client) -> None:
    policy = client.get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
