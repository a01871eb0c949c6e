"""What a turn costs the database: its queries, counted, so a slower send, retry or edit fails
here; and the checks read in those few queries refuse exactly as before.

Every turn runs on the worker's single database thread while the user waits for the first
word: these counts are a budget, not a snapshot. Under pytest-django each test is a
transaction, so a turn's own transaction shows as SAVEPOINT and RELEASE, two queries, as
BEGIN and COMMIT do in production: the counts are the same there.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries
from pytest_django.fixtures import Settings

from chat.accounts import usage
from chat.exceptions import ClientError
from chat.generation.records import saved_log, version_groups
from chat.generation.turns import create_edit, create_retry, create_turn
from chat.models import Conversation, DailyUsage, Message, Provider
from chat.owners import Owner

pytestmark = pytest.mark.django_db

SESSION = Owner(user_id=None, session_key="s" * 32)

# A turn: the transaction (2), the conversation with its provider, rate and allowance (1), the
# shown messages (1), the day's request count (1), the question and the answer (1 INSERT), the
# conversation's title and time (1).
TURN = 7
RETRY = 8  # the answer it replaces is hidden (1); the versions come with the messages
EDIT = 8  # the turns it replaces are hidden (1); the versions come with the messages


@pytest.fixture(autouse=True)
def every_check(settings: Settings) -> None:
    """Both limits on: the most a turn reads."""
    settings.CHAT_RATE_LIMIT = 30
    settings.CHAT_DAILY_TOKEN_LIMIT = 1_000_000


@pytest.fixture
def ada() -> Owner:
    user = User.objects.create_user("ada")
    DailyUsage.objects.create(user=user, day=usage.today())  # not the day's first request
    return Owner(user_id=user.pk, session_key="")


def chat(owner: Owner, exchanges: int = 3, **fields: object) -> Conversation:
    fields = {"model": "qwen-plus", "title": "Chat", **owner.new_conversation_fields(), **fields}
    conversation = Conversation.objects.create(**fields)
    earlier = timezone.now() - timedelta(hours=1)  # out of the rate limit's minute
    for n in range(exchanges):
        Message.objects.create(
            conversation=conversation, role="user", content=f"Q{n}", created_at=earlier
        )
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"A{n}",
            status="complete",
            created_at=earlier,
        )
    return conversation


def last(conversation: Conversation, role: str) -> Message:
    return conversation.messages.filter(hidden=False, role=role).last()


@pytest.mark.parametrize("exchanges", [0, 1, 10, 40])
def test_a_turn_costs_the_same_few_queries_however_long_the_conversation(
    ada: Owner, exchanges: int, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    conversation = chat(ada, exchanges)
    with django_assert_max_num_queries(TURN):
        turn = create_turn(ada, conversation.pk, "Next", set())
    assert len(turn.context) == 2 * exchanges + 1
    assert turn.user is not None and turn.user.id < turn.answer.id
    assert DailyUsage.objects.get().requests == 1


def test_a_demo_sessions_turn_counts_no_usage(
    django_assert_max_num_queries: DjangoAssertNumQueries,
) -> None:
    conversation = chat(SESSION)
    with django_assert_max_num_queries(TURN - 1):
        create_turn(SESSION, conversation.pk, "Next", set())


def test_the_days_first_request_makes_its_row(
    django_assert_max_num_queries: DjangoAssertNumQueries,
) -> None:
    user = User.objects.create_user("bob")
    owner = Owner(user_id=user.pk, session_key="")
    conversation = chat(owner)
    # The UPDATE finds no row: the INSERT, in a savepoint of its own (another worker may make
    # the row first).
    with django_assert_max_num_queries(TURN + 3):
        create_turn(owner, conversation.pk, "Next", set())
    assert DailyUsage.objects.get(user=user).requests == 1


def test_a_provider_is_read_with_the_conversation(
    ada: Owner,
    django_assert_max_num_queries: DjangoAssertNumQueries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_LLM_API_KEY", "k")
    local = Provider.objects.create(
        name="Local",
        base_url="http://127.0.0.1:9/v1",
        model_list="llama3",
        api_key_env="LOCAL_LLM_API_KEY",
    )
    conversation = chat(ada, provider=local, model="llama3")
    with django_assert_max_num_queries(TURN):
        turn = create_turn(ada, conversation.pk, "Next", set())
    assert turn.upstream.name == "Local"


def test_a_comparison_turn_reads_every_check_in_the_same_queries(
    ada: Owner, django_assert_max_num_queries: DjangoAssertNumQueries, settings: Settings
) -> None:
    """Each side of each trial counts against the rate, the allowance and the cap on answers
    at once, read with the conversation like any other turn's."""
    settings.CHAT_MAX_CONCURRENT = 4
    conversation = chat(ada)
    with django_assert_max_num_queries(TURN):
        create_turn(ada, conversation.pk, "Same question", set(), standalone=True)


def test_settling_an_orphan_costs_one_update(
    ada: Owner, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    conversation = chat(ada)
    orphan = last(conversation, "assistant")
    Message.objects.filter(pk=orphan.pk).update(
        status="streaming", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    with django_assert_max_num_queries(TURN + 1):
        create_turn(ada, conversation.pk, "Next", set())
    orphan.refresh_from_db()
    assert (orphan.status, orphan.error_kind) == ("error", "interrupted")


@pytest.mark.parametrize("exchanges", [1, 10])
def test_a_retry_costs_a_few_queries_and_reads_its_versions_with_the_messages(
    ada: Owner, exchanges: int, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    conversation = chat(ada, exchanges)
    first = last(conversation, "assistant")
    with django_assert_max_num_queries(RETRY):
        second = create_retry(ada, conversation.pk, first.pk, set())
    Message.objects.filter(pk=second.answer.id).update(status="complete", content="Again")
    with django_assert_max_num_queries(RETRY):
        third = create_retry(ada, conversation.pk, second.answer.id, set())
    expected = (first.pk, second.answer.id, third.answer.id)
    assert third.answer.version_ids == expected == version_groups(conversation.pk)[first.pk]


def test_an_edit_costs_a_few_queries_and_its_log_keeps_the_versions(
    ada: Owner, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    conversation = chat(ada, 1)
    question, first = conversation.messages.all()
    retried = create_retry(ada, conversation.pk, first.pk, set())
    Message.objects.filter(pk=retried.answer.id).update(status="complete", content="A0 again")
    edited = Message.objects.create(conversation=conversation, role="user", content="Q1")
    Message.objects.create(conversation=conversation, role="assistant", content="A1")
    with django_assert_max_num_queries(EDIT):
        turn = create_edit(ada, conversation.pk, edited.pk, "Q1, put better", set())
    assert turn.log is not None
    assert [view.id for view in turn.log] == [question.pk, retried.answer.id]
    assert turn.log[1].version_ids == (first.pk, retried.answer.id)
    assert not turn.log[1].is_latest
    assert turn.context == [
        {"role": "user", "content": "Q0"},
        {"role": "assistant", "content": "A0 again"},
        {"role": "user", "content": "Q1, put better"},
    ]
    assert "A1" not in saved_log(conversation.pk, with_retry=True)


def test_without_ids_from_a_bulk_insert_the_two_rows_are_saved_one_by_one(
    ada: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    features = type(connection.features)  # SQLite's is a property of the class
    monkeypatch.setattr(features, "can_return_rows_from_bulk_insert", False)
    conversation = chat(ada, 0, title="")
    turn = create_turn(ada, conversation.pk, "First words", set())
    assert turn.user is not None
    assert list(conversation.messages.values_list("pk", "role")) == [
        (turn.user.id, "user"),
        (turn.answer.id, "assistant"),
    ]
    assert turn.new_title == "First words"


def test_the_rate_limit_read_with_the_conversation_says_what_check_rate_says(
    ada: Owner, settings: Settings
) -> None:
    settings.CHAT_RATE_LIMIT = 3
    conversation = chat(ada, 0)
    now = timezone.now()
    for age in (50, 40, 30):  # the oldest leaves the window in 10 s
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            status="complete",
            created_at=now - timedelta(seconds=age),
        )
    with pytest.raises(ClientError) as expected:
        usage.check_rate(ada.user_id, ada.session_key)
    with pytest.raises(ClientError) as refused:
        create_turn(ada, conversation.pk, "One more", set())
    assert str(refused.value) == str(expected.value)
    assert "at most 3 requests a minute. Try again in 10 s." in str(refused.value)
    assert conversation.messages.count() == 3  # nothing stored
    # One of them out of the window: room again.
    Message.objects.filter(pk=conversation.messages.first().pk).update(
        created_at=now - timedelta(seconds=61)
    )
    create_turn(ada, conversation.pk, "One more", set())


def test_a_disabled_provider_is_refused_before_anything_is_saved(
    ada: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_API_KEY", "k")
    local = Provider.objects.create(
        name="Local",
        base_url="http://127.0.0.1:9/v1",
        model_list="llama3",
        api_key_env="LOCAL_LLM_API_KEY",
    )
    conversation = chat(ada, 1, provider=local, model="llama3")
    Provider.objects.filter(pk=local.pk).update(enabled=False)
    for attempt in (
        lambda: create_turn(ada, conversation.pk, "Next", set()),
        lambda: create_retry(ada, conversation.pk, last(conversation, "assistant").pk, set()),
        lambda: create_edit(ada, conversation.pk, last(conversation, "user").pk, "Hm", set()),
    ):
        with pytest.raises(ClientError, match="provider was removed or disabled"):
            attempt()
    assert conversation.messages.count() == 2
    assert DailyUsage.objects.get().requests == 0


def test_a_day_row_made_meanwhile_by_another_worker_is_counted_once(
    ada: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE missed the row (another worker's INSERT had not committed yet): the INSERT
    fails on the one-row-a-day constraint, and the UPDATE then counts the request."""
    real, calls = usage._today, []

    def today_missing_once(user_id: int) -> QuerySet[DailyUsage]:
        calls.append(user_id)
        return DailyUsage.objects.none() if len(calls) == 1 else real(user_id)

    monkeypatch.setattr(usage, "_today", today_missing_once)
    usage.count_request(ada.user_id)
    assert len(calls) == 2  # the UPDATE, then (the INSERT refused) the UPDATE again
    assert DailyUsage.objects.get().requests == 1
