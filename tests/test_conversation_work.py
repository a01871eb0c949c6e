"""Conversation work: edit and resend, answer versions, titles, search, the Markdown export and
delete with Undo. Services and views through Django's test client; the last tests drive the
real app over its websocket (simulator → Daphne → socket), as the browser does."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import websockets
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.conversations.work import PURGE_AFTER, search, show_version
from chat.exceptions import ClientError
from chat.generation.records import save_final, saved_log
from chat.generation.turns import create_edit, create_retry, create_turn
from chat.models import Conversation, Message
from chat.owners import Owner
from chat.rendering import fragments
from tests.support.frames import Frame
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor

OWNER = Owner(user_id=None, session_key="s" * 32)
HTMX = {"HX-Request": "true"}

db = pytest.mark.django_db
live = pytest.mark.live


def chat(owner: Owner = OWNER, **fields: Any) -> Conversation:
    return Conversation.objects.create(
        session_key=owner.session_key, user_id=owner.user_id, model="qwen-plus", **fields
    )


def exchange(conversation: Conversation, question: str, answer: str, **fields: Any) -> Message:
    """A question and its finished answer, saved as the relay saves them; returns the answer."""
    Message.objects.create(conversation=conversation, role="user", content=question)
    return Message.objects.create(
        conversation=conversation, role="assistant", content=answer, **fields
    )


def finish(answer_id: int, text: str) -> None:
    save_final(answer_id, {"status": "complete", "content": text})


def snapshot(conversation: Conversation) -> list[tuple[Any, ...]]:
    return list(
        conversation.messages.values_list("pk", "role", "content", "status", "hidden", "version_of")
    )


def client_chat(client: Client) -> Conversation:
    """A chat owned by the test client's session."""
    response = client.post("/c/new/")
    return Conversation.objects.get(pk=int(response["Location"].strip("/").split("/")[-1]))


# --- Edit and resend -----------------------------------------------------------------------------


@db
def test_an_edit_replaces_the_message_and_every_turn_after_it() -> None:
    conversation = chat(system_prompt="Be brief.")
    exchange(conversation, "First", "One")
    second = exchange(conversation, "Second", "Two")
    exchange(conversation, "Third", "Three")
    edited = conversation.messages.get(content="Second")

    turn = create_edit(OWNER, conversation.pk, edited.pk, "  Second, better  ", live=set())

    # Saved before anything is sent: the new text, and an empty answer streaming.
    shown = list(conversation.messages.filter(hidden=False).values_list("role", "content"))
    assert shown == [("user", "First"), ("assistant", "One"), ("user", "Second, better"),
                     ("assistant", "")]  # fmt: skip
    # The old turns are kept, hidden (exports keep them; the rate limit still counts them).
    hidden = set(conversation.messages.filter(hidden=True).values_list("content", flat=True))
    assert hidden == {"Second", "Two", "Third", "Three"}
    new_user = conversation.messages.get(content="Second, better")
    assert new_user.version_of_id == edited.pk
    assert turn.context == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "One"},
        {"role": "user", "content": "Second, better"},
    ]
    assert turn.user is not None and turn.user.content == "Second, better"
    assert turn.answer.status == "streaming" and turn.answer.is_latest
    assert [view.content for view in turn.log or ()] == ["First", "One"]
    assert second.pk not in {view.id for view in turn.log or ()}


@db
def test_the_edit_frame_redraws_the_log_before_appending_the_new_turn() -> None:
    conversation = chat()
    exchange(conversation, "First", "One")
    exchange(conversation, "Second", "Two")
    edited = conversation.messages.get(content="Second")
    turn = create_edit(OWNER, conversation.pk, edited.pk, "Again", live=set())
    frame = fragments.turn_frame(
        conversation.pk, turn.user, turn.answer, stale_retry=turn.stale_retry, log=turn.log
    )
    log = f'id="conversation-{conversation.pk}-log" hx-swap-oob="innerHTML"'
    append = f'hx-swap-oob="beforeend:#conversation-{conversation.pk}-log"'
    assert frame.body.index(log) < frame.body.index(append)
    redrawn = frame.body[: frame.body.index(append)]
    assert "One" in redrawn and "Two" not in redrawn and "Second" not in redrawn
    assert 'data-status="streaming"' in frame.body[frame.body.index(append) :]
    assert "Stop" in frame.chrome  # the Send button becomes Stop, as for any turn


@db
def test_an_edited_first_message_leaves_an_empty_log_and_sends_only_itself() -> None:
    conversation = chat()
    exchange(conversation, "Hello", "Hi")
    first = conversation.messages.get(content="Hello")
    turn = create_edit(OWNER, conversation.pk, first.pk, "Hello again", live=set())
    assert turn.log == ()
    assert turn.context == [{"role": "user", "content": "Hello again"}]


@pytest.mark.parametrize(
    ("target", "text", "error"),
    [
        pytest.param("user", " \n ", "Type a message first.", id="blank"),
        pytest.param("user", "x" * 32_001, "too long", id="too-long"),
        pytest.param("answer", "New", "can no longer be edited", id="an-answer"),
        pytest.param("unknown", "New", "can no longer be edited", id="unknown-id"),
        pytest.param("elsewhere", "New", "can no longer be edited", id="another-conversation"),
        pytest.param("replaced", "New", "can no longer be edited", id="already-replaced"),
    ],
)
@db
def test_a_bad_edit_is_refused_and_changes_nothing(target: str, text: str, error: str) -> None:
    conversation = chat()
    answer = exchange(conversation, "Question", "Answer")
    question = conversation.messages.get(role="user")
    other = chat(Owner(user_id=None, session_key="t" * 32))
    exchange(other, "Their question", "Their answer")
    replaced = Message.objects.create(
        conversation=conversation, role="user", content="Old", hidden=True
    )
    ids = {
        "user": question.pk,
        "answer": answer.pk,
        "unknown": 999_999,
        "elsewhere": other.messages.get(role="user").pk,
        "replaced": replaced.pk,
    }
    before, theirs = snapshot(conversation), snapshot(other)
    with pytest.raises(ClientError, match=error):
        create_edit(OWNER, conversation.pk, ids[target], text, live=set())
    assert snapshot(conversation) == before and snapshot(other) == theirs


@db
def test_an_edit_waits_for_the_answer_streaming() -> None:
    conversation = chat()
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    streaming = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming"
    )
    before = snapshot(conversation)
    with pytest.raises(ClientError, match="still streaming"):
        create_edit(OWNER, conversation.pk, question.pk, "Q2", live={streaming.pk})
    assert snapshot(conversation) == before


@db
def test_edits_count_toward_the_rate_limit_and_a_refused_one_stores_nothing(
    settings: Settings,
) -> None:
    settings.CHAT_RATE_LIMIT = 2
    conversation = chat()
    turn = create_turn(OWNER, conversation.pk, "Q", live=set())
    finish(turn.answer.id, "A")
    assert turn.user is not None
    edit = create_edit(OWNER, conversation.pk, turn.user.id, "Q, edited", live=set())
    finish(edit.answer.id, "A2")
    assert edit.user is not None
    before = snapshot(conversation)
    # The first answer is hidden now, yet it still counts: editing is no way round the limit.
    with pytest.raises(ClientError, match="Slow down"):
        create_edit(OWNER, conversation.pk, edit.user.id, "Q, again", live=set())
    assert snapshot(conversation) == before


# --- Regenerate: versions ------------------------------------------------------------------------


@db
def test_regenerating_makes_versions_and_keeps_the_earlier_ones_hidden() -> None:
    conversation = chat()
    first = exchange(conversation, "Question", "Version one")
    turn = create_retry(OWNER, conversation.pk, first.pk, live=set())
    assert turn.replaces == first.pk and turn.stale_retry == first.pk
    assert turn.answer.version_ids == (first.pk, turn.answer.id)
    assert turn.answer.version == 2 and turn.answer.versions == 2
    assert turn.context == [{"role": "user", "content": "Question"}]
    finish(turn.answer.id, "Version two")
    third = create_retry(OWNER, conversation.pk, turn.answer.id, live=set())
    assert third.answer.version_ids == (first.pk, turn.answer.id, third.answer.id)
    rows = conversation.messages.filter(role="assistant")
    assert list(rows.values_list("hidden", "version_of")) == [
        (True, None),
        (True, first.pk),
        (False, first.pk),
    ]


@db
def test_a_regenerated_answer_takes_the_old_ones_place_in_the_frame() -> None:
    conversation = chat()
    first = exchange(conversation, "Question", "Version one")
    turn = create_retry(OWNER, conversation.pk, first.pk, live=set())
    frame = fragments.turn_frame(
        conversation.pk, turn.user, turn.answer, stale_retry=turn.stale_retry,
        replaces=turn.replaces,
    )  # fmt: skip
    stale = f'<button id="retry-{first.pk}" hx-swap-oob="delete">'
    placed = f'hx-swap-oob="outerHTML:#message-{first.pk}"'
    # Its button goes first: once the article is replaced, the button would not be found.
    assert frame.body.index(stale) < frame.body.index(placed)
    assert "beforeend" not in frame.body


@db
def test_versions_are_browsed_and_the_shown_one_is_the_context() -> None:
    conversation = chat()
    first = exchange(conversation, "Question", "Version one")
    second = create_retry(OWNER, conversation.pk, first.pk, live=set())
    finish(second.answer.id, "Version two")
    third = create_retry(OWNER, conversation.pk, second.answer.id, live=set())
    finish(third.answer.id, "Version three")

    view = show_version(conversation, first.pk)
    assert view is not None and (view.version, view.versions) == (1, 3)
    assert view.previous_version is None and view.next_version == second.answer.id
    shown = conversation.messages.filter(role="assistant", hidden=False).get()
    assert shown.pk == first.pk
    # The page shows it, and a later question sends it (and not the others) as context.
    assert "Version one" in saved_log(conversation.pk, with_retry=True)
    assert "Version three" not in saved_log(conversation.pk, with_retry=True)
    turn = create_turn(OWNER, conversation.pk, "Follow-up", live=set())
    assert turn.context == [
        {"role": "user", "content": "Question"},
        {"role": "assistant", "content": "Version one"},
        {"role": "user", "content": "Follow-up"},
    ]
    # Once answered further, it is no longer the latest: its versions stay as they are.
    with pytest.raises(ClientError, match="latest answer"):
        show_version(conversation, third.answer.id)


@db
def test_no_version_is_switched_while_one_streams() -> None:
    conversation = chat()
    first = exchange(conversation, "Question", "Version one")
    create_retry(OWNER, conversation.pk, first.pk, live=set())  # streaming
    with pytest.raises(ClientError, match="Wait for the answer"):
        show_version(conversation, first.pk)
    assert Message.objects.get(pk=first.pk).hidden


@db
def test_the_latest_answer_offers_regenerate_and_its_versions() -> None:
    conversation = chat()
    first = exchange(conversation, "Question", "Version one")
    done = fragments.render_message(fragments.message_view(first, is_latest=True))
    assert ">Regenerate</button>" in done and '"action": "retry"' in done
    earlier = fragments.render_message(fragments.message_view(first, is_latest=False))
    assert "Regenerate" not in earlier
    turn = create_retry(OWNER, conversation.pk, first.pk, live=set())
    finish(turn.answer.id, "Version two")
    page = saved_log(conversation.pk, with_retry=True)
    assert 'data-version="2" data-versions="2"' in page
    assert "2 / 2" in page and 'aria-label="Previous version"' in page
    assert f'hx-post="/c/{conversation.pk}/versions/{first.pk}/"' in page
    assert "Version one" not in page  # hidden until chosen


# --- Titles --------------------------------------------------------------------------------------


@db
def test_a_conversation_is_titled_by_its_first_message_only() -> None:
    conversation = chat()
    turn = create_turn(OWNER, conversation.pk, "  Plan a\n trip   to Kyoto " + "x" * 80, set())
    assert turn.new_title.startswith("Plan a trip to Kyoto x") and len(turn.new_title) == 60
    finish(turn.answer.id, "Sure")
    later = create_turn(OWNER, conversation.pk, "And Osaka?", set())
    assert later.new_title == ""
    conversation.refresh_from_db()
    assert conversation.title == turn.new_title


@db
def test_a_renamed_conversation_keeps_its_name() -> None:
    conversation = chat(title="Mine")
    turn = create_turn(OWNER, conversation.pk, "Something else", set())
    assert turn.new_title == ""
    conversation.refresh_from_db()
    assert conversation.title == "Mine"


# --- Views: versions -----------------------------------------------------------------------------


@db
def test_the_version_view_returns_the_chosen_article(client: Client) -> None:
    conversation = client_chat(client)
    first = exchange(conversation, "Q", "Version **one**")
    owner = Owner(user_id=None, session_key=conversation.session_key)
    second = create_retry(owner, conversation.pk, first.pk, live=set())
    finish(second.answer.id, "Version two")
    response = client.post(f"/c/{conversation.pk}/versions/{first.pk}/", headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith(f'<article id="message-{first.pk}"')
    assert "<strong>one</strong>" in html and 'data-version="1"' in html
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Version <strong>one</strong>" in page and "Version two" not in page
    # Without htmx: back to the page.
    plain = client.post(f"/c/{conversation.pk}/versions/{second.answer.id}/")
    assert plain.status_code == 302
    assert "Version two" in client.get(f"/c/{conversation.pk}/").content.decode()


@db
def test_the_version_view_refuses_clearly(client: Client) -> None:
    conversation = client_chat(client)
    first = exchange(conversation, "Q", "One")
    exchange(conversation, "Q2", "Two")
    response = client.post(f"/c/{conversation.pk}/versions/{first.pk}/", headers=HTMX)
    assert response.status_code == 200 and response["HX-Reswap"] == "none"
    assert "Only the latest answer" in response.content.decode()
    assert client.get(f"/c/{conversation.pk}/versions/{first.pk}/").status_code == 405
    assert client.post(f"/c/{conversation.pk}/versions/999999/").status_code == 404
    question = conversation.messages.filter(role="user").first()
    assert question is not None
    assert client.post(f"/c/{conversation.pk}/versions/{question.pk}/").status_code == 404


# --- Search --------------------------------------------------------------------------------------


@db
def test_search_finds_titles_and_message_text_case_insensitively(client: Client) -> None:
    rivers = client_chat(client)
    rivers.title = "Rivers of Europe"
    rivers.save()
    exchange(rivers, "Tell me about the Danube", "The Danube flows through ten countries.")
    client.post("/c/new/")  # an empty chat is reused by /c/new/: make it a real one
    tea = Conversation.objects.create(session_key=rivers.session_key, model="qwen-plus")
    exchange(tea, "绿茶怎么泡？", "用八十度的水冲泡绿茶。")

    by_title = client.get("/search/", {"q": "RIVERS"}, headers=HTMX).content.decode()
    assert f'data-conversation="{rivers.pk}"' in by_title
    assert "<mark>Rivers</mark> of Europe" in by_title
    by_answer = client.get("/search/", {"q": "ten COUNTRIES"}, headers=HTMX).content.decode()
    assert f'data-conversation="{rivers.pk}"' in by_answer
    assert f'data-conversation="{tea.pk}"' not in by_answer
    assert "<mark>ten countries</mark>" in by_answer
    chinese = client.get("/search/", {"q": "八十度"}, headers=HTMX).content.decode()
    assert f'data-conversation="{tea.pk}"' in chinese and "<mark>八十度</mark>" in chinese
    none = client.get("/search/", {"q": "Amazon"}, headers=HTMX).content.decode()
    assert "No conversation contains “Amazon”." in none
    assert client.get("/search/", {"q": "  "}, headers=HTMX).content.decode().strip() == ""


@db
def test_search_results_are_escaped_and_only_the_owners(client: Client) -> None:
    mine = client_chat(client)
    exchange(mine, "What does <script>alert(1)</script> do?", "Nothing here.")
    theirs = chat(Owner(user_id=None, session_key="t" * 32), title="alert everyone")
    exchange(theirs, "alert", "alert")
    html = client.get("/search/", {"q": "<script>alert"}, headers=HTMX).content.decode()
    assert "<script>" not in html
    assert "<mark>&lt;script&gt;alert</mark>(1)&lt;/script&gt;" in html
    assert f'data-conversation="{theirs.pk}"' not in html
    stranger = Client()
    assert "Nothing here" not in stranger.get("/search/", {"q": "script"}).content.decode()


@db
def test_search_leaves_out_hidden_turns_and_deleted_conversations() -> None:
    conversation = chat()
    Message.objects.create(conversation=conversation, role="user", content="zebra", hidden=True)
    assert search(OWNER, "zebra") == []
    exchange(conversation, "zebra again", "ok")
    assert [hit.id for hit in search(OWNER, "zebra")] == [conversation.pk]
    conversation.deleted_at = timezone.now()
    conversation.save()
    assert search(OWNER, "zebra") == []


@db
def test_search_works_without_javascript_and_refuses_long_queries(client: Client) -> None:
    conversation = client_chat(client)
    exchange(conversation, "Kyoto temples", "Many.")
    page = client.get("/search/", {"q": "kyoto"}).content.decode()
    assert '<form class="search" role="search" method="get" action="/search/"' in page
    assert 'value="kyoto"' in page and "<mark>Kyoto</mark> temples" in page
    too_long = client.get("/search/", {"q": "x" * 201}, headers=HTMX).content.decode()
    assert "Search for at most 200 characters." in too_long


@db
def test_a_long_message_gives_a_short_snippet_around_the_match(client: Client) -> None:
    conversation = client_chat(client)
    text = "filler " * 100 + "needle in the haystack" + " more" * 100
    exchange(conversation, "Q", text)
    html = client.get("/search/", {"q": "needle"}, headers=HTMX).content.decode()
    snippet = re.search(r'<p class="search-results__snippet">(.*?)</p>', html, re.S)
    assert snippet is not None
    assert snippet.group(1).startswith("…") and snippet.group(1).endswith("…")
    assert "<mark>needle</mark> in the haystack" in snippet.group(1)
    assert len(snippet.group(1)) < 200


# --- Exports -------------------------------------------------------------------------------------


@db
def test_the_markdown_export_downloads_every_message_with_versions_marked(
    client: Client,
) -> None:
    conversation = client_chat(client)
    conversation.title = 'Trip: "Kyoto/Osaka" <plans>'
    conversation.system_prompt = "Be brief."
    conversation.save()
    first = exchange(conversation, "Where first?", "**Kyoto**.", model="qwen-plus")
    owner = Owner(user_id=None, session_key=conversation.session_key)
    again = create_retry(owner, conversation.pk, first.pk, live=set())
    finish(again.answer.id, "Osaka.")
    response = client.get(f"/c/{conversation.pk}/export.md")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="trip-kyotoosaka-plans.md"'
    text = response.content.decode()
    assert text.startswith('# Trip: "Kyoto/Osaka" <plans>\n')
    assert "## System prompt\n\nBe brief." in text
    assert "## You\n\nWhere first?" in text
    assert "## Answer (qwen-plus) · version 1 of 2 (not shown)\n\n**Kyoto**." in text
    assert "## Answer (qwen-plus) · version 2 of 2\n\nOsaka." in text


@db
def test_an_export_file_name_is_safe_in_any_script(client: Client) -> None:
    conversation = client_chat(client)
    conversation.title = "绿茶 / 泡法"
    conversation.save()
    disposition = client.get(f"/c/{conversation.pk}/export.md")["Content-Disposition"]
    assert disposition == "attachment; filename*=utf-8''%E7%BB%BF%E8%8C%B6-%E6%B3%A1%E6%B3%95.md"
    conversation.title = "???"
    conversation.save()
    disposition = client.get(f"/c/{conversation.pk}/export.md")["Content-Disposition"]
    assert disposition == f'attachment; filename="conversation-{conversation.pk}.md"'


@db
def test_the_json_export_keeps_every_version_marked(client: Client) -> None:
    conversation = client_chat(client)
    first = exchange(conversation, "Q", "One")
    owner = Owner(user_id=None, session_key=conversation.session_key)
    again = create_retry(owner, conversation.pk, first.pk, live=set())
    rows = client.get(f"/c/{conversation.pk}/export.json").json()["messages"]
    assert [(r["id"], r["hidden"], r["version_of"]) for r in rows[1:]] == [
        (first.pk, True, None),
        (again.answer.id, False, first.pk),
    ]


@db
def test_the_page_links_both_exports(client: Client) -> None:
    conversation = client_chat(client)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert f'<a href="/c/{conversation.pk}/export.md" download>Export as Markdown</a>' in page
    assert f'<a href="/c/{conversation.pk}/export.json" download>Export as JSON</a>' in page


# --- Delete and Undo -----------------------------------------------------------------------------


@db
def test_a_deleted_conversation_is_gone_everywhere_until_undone(client: Client) -> None:
    conversation = client_chat(client)
    conversation.title = "Secret plans"
    conversation.save()
    exchange(conversation, "Q", "A")
    owner = Owner(user_id=None, session_key=conversation.session_key)
    deleted = client.post(f"/c/{conversation.pk}/delete/", follow=True)
    page = deleted.content.decode()
    # The next page offers Undo once, with a CSRF-protected form.
    assert "Deleted “Secret plans”." in page
    assert f'action="/c/{conversation.pk}/restore/"' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'role="status"' in page
    assert 'data-dismiss-after-ms="10000"' in page
    assert "Deleted “Secret plans”." not in client.get("/").content.decode()
    # Gone from the list, search, its page, exports and its socket.
    assert f'id="conversation-{conversation.pk}-link"' not in page
    assert client.get("/search/", {"q": "secret"}, headers=HTMX).content.count(b"data-conv") == 0
    for path in ("/", "/export.json", "/export.md"):
        assert client.get(f"/c/{conversation.pk}{path}").status_code == 404
    assert owner.conversation(conversation.pk) is None
    with pytest.raises(ClientError, match="no longer exists"):
        create_turn(owner, conversation.pk, "Hello?", set())
    # Undo: all of it is back.
    restored = client.post(f"/c/{conversation.pk}/restore/")
    assert restored.status_code == 302 and restored["Location"] == f"/c/{conversation.pk}/"
    assert "Secret plans" in client.get(f"/c/{conversation.pk}/").content.decode()
    assert conversation.messages.count() == 2


@db
def test_undo_needs_the_owner_a_post_and_csrf(client: Client) -> None:
    conversation = client_chat(client)
    client.post(f"/c/{conversation.pk}/delete/")
    assert client.get(f"/c/{conversation.pk}/restore/").status_code == 405
    assert Client().post(f"/c/{conversation.pk}/restore/").status_code == 404  # a stranger
    forged = Client(enforce_csrf_checks=True)
    forged.cookies = client.cookies
    assert forged.post(f"/c/{conversation.pk}/restore/").status_code == 403
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None
    live_one = client_chat(client)
    assert client.post(f"/c/{live_one.pk}/restore/").status_code == 404  # not deleted


@db
def test_deleted_conversations_are_purged_after_a_while(client: Client) -> None:
    old = client_chat(client)
    exchange(old, "Q", "A")
    client.post(f"/c/{old.pk}/delete/")
    recent = client_chat(client)
    client.post(f"/c/{recent.pk}/delete/")
    Conversation.objects.filter(pk=old.pk).update(
        deleted_at=timezone.now() - PURGE_AFTER - timedelta(seconds=1)
    )
    client.get("/")  # a later visit purges the owner's old ones
    assert not Conversation.objects.filter(pk=old.pk).exists()
    assert not Message.objects.filter(conversation_id=old.pk).exists()
    assert Conversation.objects.filter(pk=recent.pk).exists()  # still restorable
    assert client.post(f"/c/{old.pk}/restore/").status_code == 404


@db
def test_the_purge_command_purges_everyones_old_deletes(capsys: pytest.CaptureFixture[str]) -> None:
    gone = chat(deleted_at=timezone.now() - timedelta(hours=1))
    kept = chat(deleted_at=timezone.now())
    shown = chat()
    call_command("purge_deleted")
    assert "Purged 1 deleted conversation." in capsys.readouterr().out
    assert set(Conversation.objects.values_list("pk", flat=True)) == {kept.pk, shown.pk}
    assert gone.pk not in set(Conversation.objects.values_list("pk", flat=True))
    call_command("purge_deleted", "--older-than", "0")
    assert set(Conversation.objects.values_list("pk", flat=True)) == {shown.pk}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/c/{id}/export.md"),
        ("post", "/c/{id}/versions/{answer}/"),
        ("post", "/c/{id}/restore/"),
        ("post", "/c/{id}/delete/"),
    ],
)
@db
def test_signed_in_users_reach_only_their_own(
    settings: Settings, django_user_model: Any, method: str, path: str
) -> None:
    settings.CHAT_REQUIRE_LOGIN = True
    owner, intruder = (django_user_model.objects.create_user(name) for name in ("ada", "eve"))
    mine = chat(Owner(user_id=owner.pk, session_key=""), title="Secret plans")
    answer = exchange(mine, "my secret", "kept")
    if path.endswith("restore/"):
        mine.deleted_at = timezone.now()
        mine.save()
    client = Client()
    client.force_login(intruder)
    response = getattr(client, method)(path.format(id=mine.pk, answer=answer.pk), headers=HTMX)
    assert response.status_code == 404 and b"secret" not in response.content
    assert b"Secret" not in client.get("/search/", {"q": "secret"}).content
    mine.refresh_from_db()
    assert (mine.deleted_at is None) == (not path.endswith("restore/"))
    assert not Message.objects.filter(conversation=mine, hidden=True).exists()
    assert Client().get(f"/c/{mine.pk}/export.md").status_code == 302  # to the sign-in page


# --- Over the real socket ------------------------------------------------------------------------


def user_ids(frames: list[Frame]) -> list[int]:
    return [
        int(a["id"].removeprefix("message-"))
        for f in frames
        for a in f.articles
        if a.get("data-role") == "user"
    ]


async def ask(ws: Any, text: str) -> tuple[int, int, list[Frame]]:
    """Send a question and wait for its answer: (question id, answer id, frames)."""
    await send(ws, text)
    answer_id, frames, _ = await collect_answer(ws)
    return user_ids(frames)[0], answer_id, frames


@live
async def test_edit_over_the_socket_replaces_later_turns_and_answers_anew(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    fast = "\n#sim tokens=12 tps=200 ttft=0.02"
    async with visitor.socket(conversation) as ws, visitor.socket(conversation) as other:
        first, _, _ = await ask(ws, "Rivers [t-edit-1]" + fast)
        second, _, _ = await ask(ws, "Lakes [t-edit-2]" + fast)
        await ask(ws, "Seas [t-edit-3]" + fast)
        edit = {"action": "edit", "message": str(second), "text": "Mountains [t-edit-4]" + fast}
        await ws.send(json.dumps({**edit, "HEADERS": {}}))
        answer_id, frames, final = await collect_answer(ws)
        # Every socket showing the conversation sees the same: the log redrawn, then the turn.
        _, seen_elsewhere, _ = await collect_answer(other, answer_id)
    assert final["data-status"] == "complete"
    for shown in (frames, seen_elsewhere):
        body = next(f.html for f in shown if "Mountains" in f.html)
        log = body.index(f'id="conversation-{conversation}-log" hx-swap-oob="innerHTML"')
        assert log < body.index(f'hx-swap-oob="beforeend:#conversation-{conversation}-log"')
        assert "[t-edit-1]" in body and "[t-edit-3]" not in body and "Lakes" not in body
    assert all("data-sent" not in f.html for f in frames)  # the composer keeps its text
    sent = simulator.request_for("[t-edit-4]")["messages"]
    assert [m["content"].split("\n")[0] for m in sent if m["role"] == "user"] == [
        "Rivers [t-edit-1]",
        "Mountains [t-edit-4]",
    ]
    export = visitor.export(conversation)["messages"]
    shown = [m["content"].split("\n")[0] for m in export if not m["hidden"]]
    assert shown[0] == "Rivers [t-edit-1]" and shown[2] == "Mountains [t-edit-4]"
    assert len(shown) == 4 and len(export) == 8
    assert next(m for m in export if m["id"] != second and "[t-edit-4]" in m["content"])[
        "version_of"
    ] == second  # fmt: skip
    assert first in [m["id"] for m in export if not m["hidden"]]


@live
async def test_a_bad_edit_over_the_socket_gets_an_alert_and_the_socket_goes_on(
    visitor: Visitor,
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        question, _, _ = await ask(ws, "Hello [t-edit-bad]\n#sim tokens=5 tps=200 ttft=0.01")
        for bad in (
            {"action": "edit", "message": str(question), "text": "   "},
            {"action": "edit", "message": "nope", "text": "Hi"},
            {"action": "edit", "message": str(question)},
            {"action": "edit", "message": "999999", "text": "Hi"},
        ):
            await ws.send(json.dumps(bad))
            alert = str(await asyncio.wait_for(ws.recv(), 10))
            assert 'id="alerts"' in alert and 'role="alert"' in alert
        await ask(ws, "Still here [t-edit-after]\n#sim tokens=5 tps=200 ttft=0.01")
    rows = visitor.export(conversation)["messages"]
    assert [m["hidden"] for m in rows] == [False] * 4


@live
async def test_regenerating_over_the_socket_keeps_versions_and_the_chosen_one_is_context(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation(seed="1")
    fast = "\n#sim tokens=15 tps=200 ttft=0.02"
    async with visitor.socket(conversation) as ws:
        _, first, _ = await ask(ws, "Name a colour [t-versions]" + fast)
        versions = [first]
        for seed in ("2", "3"):
            visitor.post(
                f"/c/{conversation}/settings/",
                {"model": "qwen-plus", "system_prompt": "", "stream": "on", "seed": seed},
            ).raise_for_status()
            await ws.send(json.dumps({"action": "retry", "answer": str(versions[-1])}))
            answer_id, frames, final = await collect_answer(ws)
            assert f'hx-swap-oob="outerHTML:#message-{versions[-1]}"' in frames[0].html
            versions.append(answer_id)
            count = len(versions)
            assert f'data-version="{count}" data-versions="{count}"' in frames[-1].html
    texts = {m["id"]: m["content"] for m in visitor.export(conversation)["messages"]}
    assert len({texts[v] for v in versions}) == 3  # three different answers, all kept
    chosen = visitor.http.post(
        f"/c/{conversation}/versions/{first}/",
        headers={**HTMX, "X-CSRFToken": visitor.http.cookies.get("csrftoken", "")},
    )
    assert chosen.status_code == 200 and 'data-version="1"' in chosen.text
    async with visitor.socket(conversation) as ws:
        await ask(ws, "And another? [t-versions-after]" + fast)
    sent = simulator.request_for("[t-versions-after]")["messages"]
    assert [m["content"] for m in sent if m["role"] == "assistant"] == [texts[first]]


@live
async def test_a_deleted_conversations_socket_is_refused_until_undone(visitor: Visitor) -> None:
    conversation = visitor.new_conversation()
    assert visitor.post(f"/c/{conversation}/delete/").status_code == 200
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with visitor.socket(conversation):
            pass
    assert refused.value.response.status_code == 403
    restored = visitor.post(f"/c/{conversation}/restore/")
    assert restored.status_code == 200 and str(restored.url).endswith(f"/c/{conversation}/")
    async with visitor.socket(conversation):
        pass
