"""What a turn sends upstream and what it refuses, from the database's point of view."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from chat.exceptions import ClientError
from chat.generation.records import save_progress, settle_orphans
from chat.generation.turns import create_retry, create_turn
from chat.models import Conversation, Message
from chat.owners import Owner

pytestmark = pytest.mark.django_db

OWNER = Owner(user_id=None, session_key="s" * 32)


def conversation(**fields: object) -> Conversation:
    return Conversation.objects.create(session_key=OWNER.session_key, model="qwen-plus", **fields)


def test_context_has_the_system_prompt_and_only_usable_turns() -> None:
    chat = conversation(system_prompt="Be brief.")
    Message.objects.create(conversation=chat, role="user", content="First")
    Message.objects.create(conversation=chat, role="assistant", content="Half", status="error")
    Message.objects.create(conversation=chat, role="user", content="Again")
    stopped = Message.objects.create(
        conversation=chat, role="assistant", content="Stopped at", status="stopped"
    )
    turn = create_turn(OWNER, chat.pk, "  Third  ", live=set())
    assert turn.context == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Stopped at"},
        {"role": "user", "content": "Third"},
    ]
    assert turn.stale_retry == stopped.pk  # its Retry button goes stale
    assert Message.objects.filter(conversation=chat, role="user").last().content == "Third"
    chat.refresh_from_db()
    assert chat.title == "Third"


def test_retry_asks_the_same_question_again() -> None:
    chat = conversation()
    Message.objects.create(conversation=chat, role="user", content="Question")
    failed = Message.objects.create(
        conversation=chat, role="assistant", content="Par", status="error"
    )
    turn = create_retry(OWNER, chat.pk, failed.pk, live=set())
    assert turn.context == [{"role": "user", "content": "Question"}]
    assert turn.user is None
    assert Message.objects.filter(conversation=chat).count() == 3  # the failed one is kept


def test_only_the_latest_answer_can_be_retried() -> None:
    chat = conversation()
    Message.objects.create(conversation=chat, role="user", content="Q1")
    old = Message.objects.create(
        conversation=chat, role="assistant", content="A1", status="stopped"
    )
    Message.objects.create(conversation=chat, role="user", content="Q2")
    Message.objects.create(conversation=chat, role="assistant", content="A2")
    with pytest.raises(ClientError, match="Only the latest answer"):
        create_retry(OWNER, chat.pk, old.pk, live=set())


def test_a_live_answer_blocks_a_second_one_and_a_dead_one_does_not() -> None:
    chat = conversation()
    Message.objects.create(conversation=chat, role="user", content="Q")
    streaming = Message.objects.create(
        conversation=chat, role="assistant", content="so far", status="streaming"
    )
    with pytest.raises(ClientError, match="still streaming"):
        create_turn(OWNER, chat.pk, "Another", live={streaming.pk})
    assert Message.objects.filter(conversation=chat).count() == 2  # nothing stored
    # The process that ran it is gone: it is settled as interrupted, the text kept.
    create_turn(OWNER, chat.pk, "Another", live=set())
    streaming.refresh_from_db()
    assert (streaming.status, streaming.error_kind, streaming.content) == (
        "error",
        "interrupted",
        "so far",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(" \n ", "Type a message first.", id="blank"),
        pytest.param("x" * 32_001, "too long", id="too-long"),
    ],
)
def test_bad_messages_are_refused_and_store_nothing(text: str, message: str) -> None:
    chat = conversation()
    with pytest.raises(ClientError, match=message):
        create_turn(OWNER, chat.pk, text, live=set())
    assert not Message.objects.exists()


def test_someone_elses_conversation_is_refused() -> None:
    chat = conversation()
    stranger = Owner(user_id=None, session_key="t" * 32)
    with pytest.raises(ClientError, match="no longer exists"):
        create_turn(stranger, chat.pk, "Hi", live=set())
    assert not Message.objects.exists()


def test_a_standalone_turn_sends_only_the_question() -> None:
    chat = conversation(system_prompt="Be brief.")
    Message.objects.create(conversation=chat, role="user", content="Earlier")
    Message.objects.create(conversation=chat, role="assistant", content="Earlier answer")
    turn = create_turn(OWNER, chat.pk, "Same question", live=set(), standalone=True)
    assert turn.context == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Same question"},
    ]


def test_another_workers_answer_is_live_while_its_heartbeat_is_fresh() -> None:
    """Several workers share the database: only a stopped heartbeat means a dead worker."""
    chat = conversation()
    Message.objects.create(conversation=chat, role="user", content="Q")
    elsewhere = Message.objects.create(
        conversation=chat,
        role="assistant",
        content="streaming on another worker",
        status="streaming",
        heartbeat_at=timezone.now(),
    )
    with pytest.raises(ClientError, match="still streaming"):
        create_turn(OWNER, chat.pk, "Another", live=set())
    settle_orphans(chat, live=set())
    elsewhere.refresh_from_db()
    assert elsewhere.status == "streaming"
    # Its worker died: no heartbeat for longer than STREAM_ORPHAN_AFTER.
    Message.objects.filter(pk=elsewhere.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.STREAM_ORPHAN_AFTER + 1)
    )
    settle_orphans(chat, live=set())
    elsewhere.refresh_from_db()
    assert (elsewhere.status, elsewhere.error_kind) == ("error", "interrupted")
    assert elsewhere.content == "streaming on another worker"


def test_progress_saves_touch_the_heartbeat_of_quiet_answers_too() -> None:
    chat = conversation()
    growing, quiet, finished = (
        Message.objects.create(conversation=chat, role="assistant", status=status)
        for status in ("streaming", "streaming", "complete")
    )
    finished.content = "All of it."
    finished.save()
    save_progress(
        [(growing.pk, "more ✓", "thinking"), (finished.pk, "Al", "")],
        alive=[growing.pk, quiet.pk, finished.pk],
    )
    growing.refresh_from_db()
    quiet.refresh_from_db()
    finished.refresh_from_db()
    assert (growing.content, growing.reasoning) == ("more ✓", "thinking")
    # Both beat now, by the database's clock (two statements: not always the same millisecond).
    for beaten in (growing, quiet):
        assert beaten.heartbeat_at is not None
        assert abs(timezone.now() - beaten.heartbeat_at) < timedelta(minutes=1)
    # A final row is never touched again, even by a late progress save that still holds it.
    assert finished.heartbeat_at is None and finished.content == "All of it."
