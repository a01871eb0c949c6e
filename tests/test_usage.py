"""Usage accounting: requests and tokens per user per day, the daily limit, the staff page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.accounts.usage import today
from chat.compare.runs import create_run
from chat.exceptions import ClientError
from chat.generation.records import save_final
from chat.generation.turns import create_retry, create_turn
from chat.models import ComparisonRun, Conversation, DailyUsage, Message
from chat.owners import Owner

pytestmark = pytest.mark.django_db


def chat_of(user: User) -> Conversation:
    return Conversation.objects.create(user=user, model="qwen-plus")


def answer(user: User, text: str, prompt: int | None, completion: int | None) -> Message:
    """One request and its finished answer, as the relay records them."""
    conversation = chat_of(user)
    turn = create_turn(Owner(user_id=user.pk, session_key=""), conversation.pk, text, set())
    fields = {"status": "complete", "prompt_tokens": prompt, "completion_tokens": completion}
    save_final(turn.answer.id, fields, turn.user_id)
    return Message.objects.get(pk=turn.answer.id)


def test_requests_and_reported_tokens_add_up_per_user_per_day() -> None:
    ada = User.objects.create_user("ada")
    bob = User.objects.create_user("bob")
    answer(ada, "one", 10, 20)
    answer(ada, "two", 5, 7)
    answer(ada, "no usage reported", None, None)  # llama.cpp's server, say
    answer(bob, "three", 1, 2)
    day = DailyUsage.objects.get(user=ada, day=today())
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (3, 15, 27)
    assert day.total_tokens == 42
    assert DailyUsage.objects.get(user=bob).requests == 1


def test_a_retry_counts_as_a_request() -> None:
    ada = User.objects.create_user("ada")
    first = answer(ada, "q", 1, 1)
    Message.objects.filter(pk=first.pk).update(status="error")
    owner = Owner(user_id=ada.pk, session_key="")
    create_retry(owner, first.conversation_id, first.pk, set())
    assert DailyUsage.objects.get(user=ada).requests == 2


def test_sessions_are_not_accounted() -> None:
    conversation = Conversation.objects.create(session_key="s" * 32, model="qwen-plus")
    create_turn(Owner(user_id=None, session_key="s" * 32), conversation.pk, "hi", set())
    assert not DailyUsage.objects.exists()


def test_the_daily_limit_refuses_new_requests_clearly(settings: Settings) -> None:
    settings.CHAT_DAILY_TOKEN_LIMIT = 100
    ada = User.objects.create_user("ada")
    answer(ada, "big", 40, 60)
    conversation = chat_of(ada)
    with pytest.raises(ClientError, match=r"You have used today's 100 tokens \(100\)"):
        create_turn(Owner(user_id=ada.pk, session_key=""), conversation.pk, "more", set())
    assert not conversation.messages.exists()  # nothing stored
    assert DailyUsage.objects.get(user=ada).requests == 1  # the refused one is not counted
    bob = User.objects.create_user("bob")
    answer(bob, "still fine", 1, 1)  # the limit is per user


def test_the_usage_page_is_for_staff_only(client: Client) -> None:
    ada = User.objects.create_user("ada")
    answer(ada, "one", 10, 20)
    client.force_login(ada)
    assert client.get("/usage/").status_code == 404
    staff = User.objects.create_user("boss", is_staff=True)
    client.force_login(staff)
    page = client.get("/usage/").content.decode()
    assert '<th scope="row">ada</th><td>1</td><td>10</td><td>20</td><td>30</td>' in page
    assert "No daily limit is set" in page


def test_usage_is_read_only_in_the_admin(admin_client: Client) -> None:
    ada = User.objects.create_user("ada")
    answer(ada, "one", 10, 20)
    listing = admin_client.get("/admin/chat/dailyusage/").content.decode()
    assert "ada" in listing
    assert admin_client.get("/admin/chat/dailyusage/add/").status_code == 403


def test_the_rate_limit_says_slow_down_and_stores_nothing(settings: Settings) -> None:
    settings.CHAT_RATE_LIMIT = 3
    ada = User.objects.create_user("ada")
    for n in range(3):
        answer(ada, f"quick {n}", 1, 1)
    conversation = chat_of(ada)
    with pytest.raises(ClientError, match=r"Slow down: at most 3 requests a minute\. Try again in"):
        create_turn(Owner(user_id=ada.pk, session_key=""), conversation.pk, "one more", set())
    assert not conversation.messages.exists()  # the refused message was not saved
    assert DailyUsage.objects.get(user=ada).requests == 3
    # Another user, and a minute later the same one, may ask again.
    answer(User.objects.create_user("bob"), "bob's first", 1, 1)
    Message.objects.filter(conversation__user=ada).update(
        created_at=timezone.now() - timedelta(seconds=61)
    )
    answer(ada, "after a minute", 1, 1)


def test_the_rate_limit_counts_a_demo_session(settings: Settings) -> None:
    settings.CHAT_RATE_LIMIT = 1
    key = "s" * 32
    owner = Owner(user_id=None, session_key=key)
    first = Conversation.objects.create(session_key=key, model="qwen-plus")
    create_turn(owner, first.pk, "a", set())
    second = Conversation.objects.create(session_key=key, model="qwen-plus")
    with pytest.raises(ClientError, match="Slow down"):
        create_turn(owner, second.pk, "b", set())
    other = Conversation.objects.create(session_key="t" * 32, model="qwen-plus")
    create_turn(Owner(user_id=None, session_key="t" * 32), other.pk, "c", set())  # its own


def test_a_comparison_needs_room_for_all_its_requests(settings: Settings) -> None:
    settings.CHAT_RATE_LIMIT = 10
    ada = User.objects.create_user("ada")
    owner = Owner(user_id=ada.pk, session_key="")
    answer(ada, "one", 1, 1)
    with pytest.raises(ClientError, match="Slow down: at most 10 requests a minute"):
        create_run(owner, "five times each way", "qwen-plus", 5)  # 10 more would be 11
    assert not ComparisonRun.objects.exists()
    create_run(owner, "once each way", "qwen-plus", 1)  # 2 more fit
