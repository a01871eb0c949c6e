"""Answers in the database: progress and final saves, answers a dead worker left, and the
saved views a socket falls back to (sync; async callers go through ``database_sync_to_async``).

A final save outlives a database that is briefly unreachable (``save_final_retrying``): the
answer's text lives only in this worker's memory until it is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Field, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from chat import heartbeats, images
from chat.accounts import usage
from chat.models import Conversation, Message
from chat.prepared import Marker, PreparedQuery
from chat.rendering import fragments

from .failures import ServerRestarted

logger = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = ServerRestarted.default_message


def version_groups(conversation_id: int) -> dict[int, tuple[int, ...]]:
    """Every regenerated answer's versions, oldest first, by the id of its first version."""
    groups: dict[int, list[int]] = {}
    later = Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT, version_of__isnull=False
    ).values_list("version_of_id", "pk")
    for first, pk in later:
        groups.setdefault(first, [first]).append(pk)
    return {first: tuple(ids) for first, ids in groups.items()}


def versions_of(row: Message, groups: Mapping[int, tuple[int, ...]]) -> tuple[int, ...]:
    """An answer's versions (empty if it has only the one)."""
    if row.role != Message.Role.ASSISTANT:
        return ()
    return groups.get(row.version_of_id or row.pk, ())


def shown_views(
    conversation_id: int, rows: Sequence[Message], *, latest: bool
) -> list[fragments.MessageView]:
    """Views of shown messages, with their versions; ``latest``: the last one is the latest."""
    groups = version_groups(conversation_id)
    pictures = images.of_questions(rows)
    return [
        fragments.message_view(
            row,
            is_latest=latest and index == len(rows) - 1,
            version_ids=versions_of(row, groups),
            images=pictures.get(row.pk, ()),
        )
        for index, row in enumerate(rows)
    ]


def settle_answers(pks: list[int]) -> None:
    """Mark these answers interrupted (text kept) if they are still "streaming"."""
    failure = ServerRestarted()
    Message.objects.filter(pk__in=pks, status=Message.Status.STREAMING).update(
        status=Message.Status.ERROR,
        error_kind=failure.kind,
        error_message=failure.message,
        error_wording=failure.wording.as_data(),
        completed_at=timezone.now(),
    )


def is_orphan(row: Message, live: set[int]) -> bool:
    """Streaming, yet neither this worker nor any other has touched it lately: its worker died
    (SIGKILL, crash, power). Live answers of other workers keep a fresh heartbeat.

    ``row`` was read through ``heartbeats.with_staleness``: the heartbeat's age is the
    database's judgement, never this worker's clock against another's."""
    if row.pk in live:
        return False
    stale = getattr(row, heartbeats.STALE, _UNREAD)
    if stale is _UNREAD:
        raise TypeError("is_orphan needs a row read through heartbeats.with_staleness()")
    return bool(stale)


_UNREAD = object()


def settle_orphans(conversation: Conversation, live: set[int]) -> None:
    """Mark as interrupted the answers a dead worker left "streaming", keeping their text."""
    stale = conversation.messages.filter(heartbeats.stale()).exclude(pk__in=live)
    orphans = list(stale.values_list("pk", flat=True))
    if orphans:
        settle_answers(orphans)


def save_progress(rows: list[tuple[int, str, str]], alive: Sequence[int] = ()) -> None:
    """Save the text so far of several growing answers, and the heartbeat of every answer this
    worker runs (``alive``), in one transaction.

    The grown rows go as one ``executemany`` of a single prepared UPDATE: at hundreds of
    streams, compiling an ORM update per row each second cost more than the writes. Only rows
    still streaming are touched, so a late progress save never undoes a final one.
    """
    streaming = Message.Status.STREAMING
    with transaction.atomic():
        if rows:
            connection = transaction.get_connection()
            quote = connection.ops.quote_name
            fields = {name: _column(name) for name in _PROGRESS_FIELDS}
            # The heartbeat is the database's time, not this worker's (``chat.heartbeats``).
            sql = (
                f"UPDATE {quote(Message._meta.db_table)} SET {quote(fields['content'])} = %s, "
                f"{quote(fields['reasoning'])} = %s, "
                f"{quote(fields['heartbeat_at'])} = {heartbeats.now_sql(connection)} "
                f"WHERE {quote(fields['id'])} = %s AND {quote(fields['status'])} = %s"
            )
            with connection.cursor() as cursor:
                cursor.executemany(
                    sql, [(content, reasoning, pk, streaming) for pk, content, reasoning in rows]
                )
        changed = {row[0] for row in rows}
        quiet = [pk for pk in alive if pk not in changed]
        if quiet:
            Message.objects.filter(pk__in=quiet, status=streaming).update(heartbeat_at=Now())


_PROGRESS_FIELDS = ("id", "content", "reasoning", "heartbeat_at", "status")


def _column(name: str) -> str:
    """The database column of one of Message's own fields (``get_field`` may also return a
    relation's reverse side, which has none)."""
    field = Message._meta.get_field(name)
    assert isinstance(field, Field)
    return field.column


def streaming_answers(conversation_id: int, exclude: set[int]) -> list[int]:
    """The conversation's answers marked streaming, other than ``exclude`` (this worker's).
    Asked by every socket as it opens: compiled once (``chat.prepared``)."""
    rows = _STREAMING.run(None, conversation=conversation_id)
    return [row.pk for row in rows if row.pk not in exclude]


def _streaming_query(marker: Marker, shape: None) -> QuerySet[Message]:
    return (
        Message.objects.filter(
            conversation_id=marker.number("conversation"), status=Message.Status.STREAMING
        ).only("pk")  # oldest first, as the model orders them
    )


_STREAMING = PreparedQuery(_streaming_query)


def saved_answer(answer_id: int, live: set[int] | None = None) -> fragments.MessageView | None:
    """An answer as saved. Given ``live`` (this worker's answers), one a dead worker left
    "streaming" is settled as interrupted first: a socket whose frames stopped coming shows
    that, never "streaming" forever."""
    message = heartbeats.with_staleness(Message.objects.filter(pk=answer_id)).first()
    if message is None:
        return None
    streaming = message.status == Message.Status.STREAMING
    if live is not None and streaming and is_orphan(message, live):
        settle_answers([message.pk])
        message.refresh_from_db()
    return _answer_view(message)


def _answer_view(message: Message) -> fragments.MessageView:
    versions = versions_of(message, version_groups(message.conversation_id))
    return fragments.message_view(message, is_latest=True, version_ids=versions)


def ended_answers(conversation_ids: list[int], ids: set[int]) -> list[fragments.MessageView]:
    """Of ``ids``, the answers in these conversations that are no longer streaming."""
    rows = Message.objects.filter(
        pk__in=ids, conversation_id__in=conversation_ids, role=Message.Role.ASSISTANT
    ).exclude(status=Message.Status.STREAMING)
    return [_answer_view(row) for row in rows]


def saved_log(conversation_id: int, *, with_retry: bool) -> str:
    """The conversation's messages as saved, for a socket that missed an answer's first frame."""
    shown = Message.objects.filter(conversation_id=conversation_id, hidden=False)
    shown = shown.annotate(has_images=images.flag())
    views = shown_views(conversation_id, list(shown.order_by("pk")), latest=with_retry)
    return fragments.log_frame(conversation_id, views)


def save_final(
    answer_id: int,
    fields: Mapping[str, Any],
    user_id: int | None = None,
    counted: tuple[int | None, int | None, bool] | None = None,
) -> bool:
    """Write the finished answer and add its tokens to its user's day (``counted``: a
    continuation's own prompt, completion and whether estimated, its row holding the sums);
    False if its conversation was deleted meanwhile."""
    if counted is None:
        counted = (
            fields.get("prompt_tokens"),
            fields.get("completion_tokens"),
            bool(fields.get("tokens_estimated")),
        )
    with transaction.atomic():
        saved = bool(Message.objects.filter(pk=answer_id).update(**fields))
        if user_id is not None:
            usage.add_tokens(user_id, counted[0], counted[1], estimated=counted[2])
    return saved


# A database that is briefly away (PostgreSQL restarting, a dropped connection, a full disk
# being cleared) must not lose the answer: its text lives only in this worker's memory.
SAVE_RETRY_FIRST = 0.5  # seconds before the second try; doubled each time up to SAVE_RETRY_MAX
SAVE_RETRY_MAX = 10.0
RETRYABLE = (OperationalError, InterfaceError)  # the database is away


async def save_final_retrying(
    answer_id: int,
    fields: Mapping[str, Any],
    user_id: int | None,
    *,
    give_up_after: float,
    counted: tuple[int | None, int | None, bool] | None = None,
) -> bool:
    """``save_final`` until the database takes it (for up to ``give_up_after`` seconds of the
    clock, attempts included); one warning when it first fails, one line when it goes
    through. Raises the last error if it never does."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    wait, failures = SAVE_RETRY_FIRST, 0
    while True:
        try:
            saved = await database_sync_to_async(save_final)(answer_id, fields, user_id, counted)
        except RETRYABLE as exc:
            failures += 1
            waited = loop.time() - started
            if waited + wait > give_up_after:
                logger.error("answer %d: the final save failed for %.0f s; giving up (%s)",
                             answer_id, waited, exc)  # fmt: skip
                raise
            if failures == 1:
                logger.warning("answer %d: the database refused the final save (%s: %s); "
                               "trying again until it is back", answer_id, type(exc).__name__,
                               str(exc).strip())  # fmt: skip
            await asyncio.sleep(wait)
            wait = min(wait * 2, SAVE_RETRY_MAX)
            continue
        if failures:
            logger.info("answer %d: saved after %d failed attempts", answer_id, failures)
        return saved
