"""``manage.py answers_in_flight``: what streams on every worker, and settling the stale."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


def streaming(conversation: Conversation, beat_seconds_ago: float | None, text: str) -> Message:
    beat = (
        None if beat_seconds_ago is None else timezone.now() - timedelta(seconds=beat_seconds_ago)
    )
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        model="qwen-plus",
        content=text,
        heartbeat_at=beat,
    )


def test_lists_live_and_stale_answers_and_settles_only_the_stale() -> None:
    ada = Conversation.objects.create(user=User.objects.create_user("ada"), model="qwen-plus")
    demo = Conversation.objects.create(session_key="s" * 32, model="qwen-plus")
    live = streaming(ada, 1, "still going")
    dead = streaming(demo, 120, "cut here")
    done = Message.objects.create(conversation=ada, role="assistant", status="complete")

    out = StringIO()
    call_command("answers_in_flight", stdout=out)
    lines = out.getvalue().splitlines()
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert "ada" in rows[str(live.pk)] and rows[str(live.pk)].endswith("live")
    assert "(session)" in rows[str(dead.pk)] and rows[str(dead.pk)].endswith("stale")
    assert str(done.pk) not in rows
    assert lines[-1] == "2 in flight, 1 stale"
    assert Message.objects.get(pk=dead.pk).status == "streaming"  # listing changes nothing

    out = StringIO()
    call_command("answers_in_flight", "--settle", stdout=out)
    assert out.getvalue().splitlines()[-1] == "2 in flight, 1 stale; 1 marked interrupted"
    dead.refresh_from_db()
    live.refresh_from_db()
    assert (dead.status, dead.error_kind, dead.content) == ("error", "interrupted", "cut here")
    assert live.status == "streaming"
