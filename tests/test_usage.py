"""Usage accounting: requests and tokens per user per day, the daily limit, the staff page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.accounts.usage import estimate_tokens, today
from chat.compare.runs import create_run, create_trial
from chat.exceptions import ClientError
from chat.generation.failures import ServerStopped
from chat.generation.records import save_final
from chat.generation.state import Generation
from chat.generation.turns import create_retry, create_turn
from chat.llm import Usage
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


# --- Estimates: answers stopped or cut off before their usage came ----------------------------


def test_the_estimate_counts_cjk_one_a_character_and_other_text_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2  # rounded up
    assert estimate_tokens("你好，世界") == 5  # the full-width comma too
    assert estimate_tokens("Hello 世界") == 2 + 2  # "Hello " is 6 characters: 2 tokens
    assert estimate_tokens("こんにちは") == 5


def stopped_answer(user: User, text: str, reasoning: str = "") -> Message:
    """A streamed answer the user stopped before the upstream reported any usage."""
    conversation = chat_of(user)
    turn = create_turn(Owner(user_id=user.pk, session_key=""), conversation.pk, "Tell me", set())
    generation = Generation(turn=turn)
    generation.text.append(text)
    if reasoning:
        generation.reasoning.append(reasoning)
    generation.stop_requested = True
    save_final(turn.answer.id, generation.outcome(), turn.user_id)
    return Message.objects.get(pk=turn.answer.id)


def test_a_stopped_answer_without_usage_counts_an_estimate_marked_as_one() -> None:
    ada = User.objects.create_user("ada")
    row = stopped_answer(ada, "x" * 400, reasoning="思考" * 10)
    assert row.status == "stopped" and row.tokens_estimated
    assert row.completion_tokens == 100 + 20  # the text, and the thinking it streamed
    # The prompt that was sent: "Tell me" (2) and the template's overhead (4).
    assert row.prompt_tokens == 2 + 4
    assert row.total_tokens == 126
    day = DailyUsage.objects.get(user=ada)
    assert (day.prompt_tokens, day.completion_tokens, day.estimated_tokens) == (6, 120, 126)
    answer(ada, "reported", 10, 20)  # reported figures are not estimates
    day.refresh_from_db()
    assert (day.total_tokens, day.estimated_tokens) == (156, 126)


def test_reported_usage_wins_and_a_complete_answer_without_usage_is_estimated() -> None:
    ada = User.objects.create_user("ada")
    owner = Owner(user_id=ada.pk, session_key="")
    stopped = create_turn(owner, chat_of(ada).pk, "Native", set())
    generation = Generation(turn=stopped)
    generation.text.append("x" * 400)
    generation.usage = Usage(prompt_tokens=7, completion_tokens=33, total_tokens=40)  # cumulative
    generation.stop_requested = True
    save_final(stopped.answer.id, generation.outcome(), ada.pk)
    row = Message.objects.get(pk=stopped.answer.id)
    assert (row.completion_tokens, row.tokens_estimated) == (33, False)

    complete = create_turn(owner, chat_of(ada).pk, "llama.cpp", set())
    generation = Generation(turn=complete)
    generation.text.append("A whole answer.")
    generation.finish_reason = "stop"
    save_final(complete.answer.id, generation.outcome(), ada.pk)
    row = Message.objects.get(pk=complete.answer.id)
    # Figures never go missing: a server that reports no usage (llama.cpp) gets our estimate.
    assert (row.prompt_tokens, row.completion_tokens, row.tokens_estimated) == (7, 4, True)

    refused = create_turn(owner, chat_of(ada).pk, "Nothing came", set())
    generation = Generation(turn=refused)
    generation.error = ServerStopped()
    save_final(refused.answer.id, generation.outcome(), ada.pk)
    assert Message.objects.get(pk=refused.answer.id).total_tokens is None  # maybe never sent
    day = DailyUsage.objects.get(user=ada)
    assert (day.total_tokens, day.estimated_tokens) == (51, 11)


def test_estimates_fill_the_daily_limit(settings: Settings) -> None:
    settings.CHAT_DAILY_TOKEN_LIMIT = 100
    ada = User.objects.create_user("ada")
    stopped_answer(ada, "y" * 400)  # 100 + 6: past the limit
    conversation = chat_of(ada)
    with pytest.raises(ClientError, match=r"You have used today's 100 tokens \(106\)"):
        create_turn(Owner(user_id=ada.pk, session_key=""), conversation.pk, "more", set())
    assert not conversation.messages.exists()


def test_the_usage_page_shows_which_tokens_are_estimates(client: Client) -> None:
    ada = User.objects.create_user("ada")
    answer(ada, "one", 10, 20)
    stopped_answer(ada, "z" * 40)  # 10 completion + 6 prompt, estimated
    client.force_login(User.objects.create_user("boss", is_staff=True))
    page = client.get("/usage/").content.decode()
    assert "Estimated tokens" in page
    per_user = '<th scope="row">ada</th><td>2</td><td>16</td><td>30</td><td>46</td>'
    assert per_user + "<td data-estimated>16</td>" in page


def test_the_json_export_says_which_counts_are_estimates(client: Client) -> None:
    ada = User.objects.create_user("ada")
    row = stopped_answer(ada, "w" * 40)
    client.force_login(ada)
    export = client.get(f"/c/{row.conversation_id}/export.json").json()
    saved = next(m for m in export["messages"] if m["id"] == row.pk)
    assert saved["tokens_estimated"] is True and saved["completion_tokens"] == 10
    page = client.get(f"/c/{row.conversation_id}/").content.decode()
    assert "Tokens: 6 prompt / 10 completion / 16 total (estimated)" in page


# --- Comparisons: every trial's requests count -------------------------------------------------


def test_each_trial_of_a_comparison_counts_against_the_rate(settings: Settings) -> None:
    settings.CHAT_RATE_LIMIT = 10
    ada = User.objects.create_user("ada")
    owner = Owner(user_id=ada.pk, session_key="")
    run = create_run(owner, "five times each way", "qwen-plus", 5)  # 10 fit: nothing yet
    answer(ada, "meanwhile, elsewhere", 1, 1)  # another page's request
    for trial in range(1, 5):
        turns = create_trial(owner, run, trial, set())
        Message.objects.filter(pk__in=[t.answer.id for t in turns]).update(status="complete")
    with pytest.raises(ClientError, match="Slow down: at most 10 requests a minute"):
        create_trial(owner, run, 5, set())  # 9 made: room for one, not two
    assert sorted(run.results.values_list("trial", flat=True)) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert Message.objects.filter(role="assistant", conversation__user=ada).count() == 9


def test_each_trial_of_a_comparison_counts_against_the_daily_limit(settings: Settings) -> None:
    settings.CHAT_DAILY_TOKEN_LIMIT = 100
    ada = User.objects.create_user("ada")
    owner = Owner(user_id=ada.pk, session_key="")
    run = create_run(owner, "twice", "qwen-plus", 5)
    (stream, nostream) = create_trial(owner, run, 1, set())
    for turn in (stream, nostream):
        fields = {"status": "complete", "prompt_tokens": 20, "completion_tokens": 30}
        save_final(turn.answer.id, fields, ada.pk)
    with pytest.raises(ClientError, match="You have used today's 100 tokens"):
        create_trial(owner, run, 2, set())
    assert run.results.count() == 2


# --- Answers at once -----------------------------------------------------------------------------


def streaming_in(owner: Owner, **fields: object) -> Conversation:
    conversation = Conversation.objects.create(
        model="qwen-plus", **owner.new_conversation_fields(), **fields
    )
    create_turn(owner, conversation.pk, "A long one", set())
    return conversation


@pytest.mark.parametrize("who", ["user", "session"])
def test_a_fifth_answer_at_once_is_refused_in_any_conversation(
    settings: Settings, who: str
) -> None:
    settings.CHAT_MAX_CONCURRENT = 4
    if who == "user":
        owner = Owner(user_id=User.objects.create_user("ada").pk, session_key="")
    else:
        owner = Owner(user_id=None, session_key="s" * 32)
    busy = [streaming_in(owner) for _ in range(3)]
    streaming_in(owner, purpose=Conversation.Purpose.COMPARE)  # a comparison pane counts too
    fifth = Conversation.objects.create(model="qwen-plus", **owner.new_conversation_fields())
    with pytest.raises(ClientError, match="You already have 4 answers streaming"):
        create_turn(owner, fifth.pk, "One more", set())
    assert not fifth.messages.exists()  # nothing saved: the message box keeps it
    # Someone else is not held back.
    other = Owner(user_id=None, session_key="t" * 32)
    streaming_in(other)
    # One ends: room again.
    Message.objects.filter(conversation=busy[0], role="assistant").update(status="stopped")
    create_turn(owner, fifth.pk, "One more", set())


def test_answers_a_dead_worker_left_do_not_count_and_this_workers_do(settings: Settings) -> None:
    settings.CHAT_MAX_CONCURRENT = 2
    owner = Owner(user_id=None, session_key="s" * 32)
    first, second = streaming_in(owner), streaming_in(owner)
    stale = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(conversation=first, role="assistant").update(heartbeat_at=stale)
    third = Conversation.objects.create(model="qwen-plus", session_key=owner.session_key)
    create_turn(owner, third.pk, "The orphan does not count", set())
    # An answer this worker runs counts whatever its heartbeat (the database was away).
    Message.objects.filter(conversation=third, role="assistant").update(heartbeat_at=stale)
    live = set(
        Message.objects.filter(conversation=third, role="assistant").values_list("pk", flat=True)
    )
    fourth = Conversation.objects.create(model="qwen-plus", session_key=owner.session_key)
    with pytest.raises(ClientError, match="You already have 2 answers streaming"):
        create_turn(owner, fourth.pk, "Too many", live)
    assert second.messages.count() == 2
