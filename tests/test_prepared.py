"""Prepared queries (``chat.prepared``): built and compiled once, they must give exactly what
the ORM gives for the same arguments, for every owner, limit and list length, and refuse a
query whose arguments would not reach its SQL whole rather than run it wrong."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.accounts import usage
from chat.generation import turns
from chat.models import Conversation, DailyUsage, Message, Provider
from chat.owners import Owner
from chat.prepared import Marker, PreparedQuery

pytestmark = pytest.mark.django_db

SESSION = Owner(user_id=None, session_key="s" * 32)


def _columns(row: Conversation, names: list[str]) -> dict[str, Any]:
    fields = {f.attname: getattr(row, f.attname) for f in Conversation._meta.concrete_fields}
    provider = row.provider
    return {
        **fields,
        "provider": None if provider is None else (provider.pk, provider.name, provider.base_url),
        **{name: getattr(row, name) for name in names},
    }


def _owned(owner: Owner, **fields: Any) -> Conversation:
    fields = {"model": "qwen-plus", **owner.new_conversation_fields(), **fields}
    return Conversation.objects.create(**fields)


@pytest.fixture
def ada() -> Owner:
    user = User.objects.create_user("ada")
    DailyUsage.objects.create(user=user, day=usage.today(), prompt_tokens=5, completion_tokens=7)
    return Owner(user_id=user.pk, session_key="")


@pytest.mark.parametrize("limits", [(0, 0, 0), (30, 1_000_000, 4), (1, 10, 1)])
@pytest.mark.parametrize("who", ["user", "session"])
@pytest.mark.parametrize("live_count", [0, 1, 3])
def test_the_turns_conversation_read_matches_the_orm(
    ada: Owner, settings: Settings, limits: tuple[int, int, int], who: str, live_count: int
) -> None:
    settings.CHAT_RATE_LIMIT, settings.CHAT_DAILY_TOKEN_LIMIT, settings.CHAT_MAX_CONCURRENT = limits
    owner = ada if who == "user" else SESSION
    provider = Provider.objects.create(name="Local", base_url="http://127.0.0.1:9/v1")
    conversation = _owned(owner, provider=provider, title="Mine")
    _owned(owner)  # another of theirs: not read
    answers = []
    for n in range(3):  # streaming answers, one a minute ago: rate and at-once both see them
        answer = Message.objects.create(
            conversation=conversation, role="assistant", status="streaming", content=f"A{n}"
        )
        answers.append(answer.pk)
    Message.objects.filter(pk=answers[0]).update(created_at=timezone.now() - timedelta(hours=1))
    live = set(answers[:live_count])

    with transaction.atomic():
        found, checks = turns._locked(owner, conversation.pk, live)
    expected = usage.RequestChecks.of(owner.user_id, owner.session_key, live)
    orm = (
        owner.conversations()
        .select_related("provider")
        .annotate(**expected.annotations)
        .get(pk=conversation.pk)
    )
    names = list(expected.annotations)
    assert _columns(found, names) == _columns(orm, names)
    assert (checks.rate_limit, checks.token_limit) == (
        expected.rate_limit,
        expected.token_limit,
    )


def test_someone_elses_conversation_is_not_found(ada: Owner) -> None:
    theirs = _owned(SESSION)
    with pytest.raises(turns.ClientError, match="no longer exists"), transaction.atomic():
        turns._locked(ada, theirs.pk, set())


def test_the_history_read_matches_the_orm_deferred_fields_and_staleness_included() -> None:
    conversation = _owned(SESSION)
    shown = [("user", "complete"), ("assistant", "complete"), ("assistant", "streaming")]
    for role, status in shown:
        Message.objects.create(conversation=conversation, role=role, status=status, content="x")
    Message.objects.create(conversation=conversation, role="user", content="gone", hidden=True)

    rows = turns._history(conversation)
    orm = list(
        turns.heartbeats.with_staleness(
            conversation.messages.filter(hidden=False).only(*turns._HISTORY_FIELDS)
        )
    )
    assert [(r.pk, r.role, r.content, r.status, r.created_at) for r in rows] == [
        (r.pk, r.role, r.content, r.status, r.created_at) for r in orm
    ]
    assert [r.heartbeat_stale for r in rows] == [r.heartbeat_stale for r in orm]
    assert rows[0].created_at.tzinfo is not None  # converted as the ORM converts
    assert rows[0].get_deferred_fields() == orm[0].get_deferred_fields()


def test_an_argument_that_would_not_reach_the_sql_whole_is_refused() -> None:
    def build(marker: Marker, shape: object) -> QuerySet[Conversation]:
        return Conversation.objects.filter(title__icontains=marker.text("title"))

    with pytest.raises(ValueError, match="title"):
        PreparedQuery(build).run(None, title="x")


def test_each_shape_is_compiled_once_and_runs_with_new_values() -> None:
    built = []

    def build(marker: Marker, shape: int) -> QuerySet[Conversation]:
        built.append(shape)
        return Conversation.objects.filter(pk__in=marker.numbers("ids", shape)).order_by("pk")

    query = PreparedQuery(build)
    a, b, c = (_owned(SESSION, title=t) for t in "abc")
    assert [r.title for r in query.run(2, ids=[a.pk, c.pk])] == ["a", "c"]
    assert [r.title for r in query.run(2, ids=[b.pk, c.pk])] == ["b", "c"]
    assert [r.title for r in query.run(1, ids=[b.pk])] == ["b"]
    assert built == [2, 1]
