"""Turns: the rows a send, a retry or an edit creates, in one transaction, before anything
is sent upstream; and what the generation needs of them, as plain data (``Turn``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone, translation
from django.utils.translation import gettext

from chat import heartbeats, images, providers
from chat.accounts import access, usage
from chat.exceptions import ClientError
from chat.models import Conversation, Message
from chat.owners import Owner
from chat.prepared import Marker, PreparedQuery
from chat.rendering import fragments

from .records import is_orphan, settle_answers, versions_of


@dataclass(frozen=True, slots=True)
class Continued:
    """An answer cut at the length limit, as saved before it goes on (``continuation``): the
    continuation starts from its text and adds its figures to these."""

    answer: fragments.MessageView
    timeline: bytes = b""


@dataclass(frozen=True, slots=True)
class Turn:
    """The rows a send or retry created, as plain data for the generation and the fragments."""

    conversation_id: int
    model: str
    stream: bool
    # {"role", "content"} dicts; a user message with images also has "images" (data URLs),
    # which only the request sent upstream turns into content parts (``chat.llm``).
    context: list[dict[str, Any]]
    answer: fragments.MessageView
    upstream: providers.Upstream
    options: dict[str, Any] = field(default_factory=dict)
    user_id: int | None = None  # whose usage the answer counts toward (None: a session)
    owner: Owner | None = None  # whose answers at once it counts among (``live_of``)
    user: fragments.MessageView | None = None
    stale_retry: int | None = None  # the answer whose Retry button a new turn makes stale
    new_title: str = ""
    replaces: int | None = None  # a new version takes this (now hidden) version's place
    log: tuple[fragments.MessageView, ...] | None = None  # after an edit: the log before it
    # The language of the socket that asked (active when the turn is made): every frame of
    # the answer, broadcast to all sockets showing the conversation, is written in it.
    language: str = field(default_factory=lambda: translation.get_language() or "")
    # The idle read timeout of this answer's request when not the pool's (the comparison page's
    # gateway timeout: a proxy's limit, applied for real so its failure is the upstream's own).
    read_timeout: float | None = None
    continued: Continued | None = None  # Continue: the answer goes on (the same row, appended)


def request_options(conversation: Conversation) -> dict[str, Any]:
    """The conversation's request options that are set; unset ones are not sent at all."""
    names = ("temperature", "top_p", "max_tokens", "seed", "enable_thinking")
    return {n: getattr(conversation, n) for n in names if getattr(conversation, n) is not None}


def _upstream(conversation: Conversation) -> providers.Upstream:
    """The conversation's provider (read with it), checked before anything is saved or sent."""
    upstream = providers.upstream_of(conversation.provider_id, conversation.provider)
    if conversation.model not in upstream.models:
        raise ClientError(
            gettext(
                "The model “%(model)s” is no longer offered by %(provider)s: pick another model."
            )
            % {"model": conversation.model, "provider": upstream.name}
        )
    problem = upstream.problem()
    if problem:
        raise ClientError(problem)
    return upstream


# What the checks and the context need of the earlier messages. "conversation" too: rows of
# ``conversation.messages`` are given their conversation by its id, which must not be deferred
# (a query per row otherwise).
_HISTORY_FIELDS = (
    "id", "conversation", "role", "content", "status", "created_at", "heartbeat_at",
    "version_of", "hidden",
)  # fmt: skip


def _history_query(marker: Marker, shape: Any) -> QuerySet[Message]:
    shown = Message.objects.filter(conversation_id=marker.number("conversation"), hidden=False)
    shown = shown.annotate(has_images=images.flag())
    return heartbeats.with_staleness(shown.only(*_HISTORY_FIELDS))


_HISTORY = PreparedQuery(_history_query)


def _history(conversation: Conversation) -> list[Message]:
    """The conversation's messages in order: read once per turn, for every check and context
    (whether a streaming one's worker died is judged in the same query)."""
    return _HISTORY.run(settings.STREAM_ORPHAN_AFTER, conversation=conversation.pk)


def _history_and_versions(
    conversation: Conversation, *, every_field: bool = False
) -> tuple[list[Message], dict[int, tuple[int, ...]]]:
    """The shown messages in order, and every regenerated answer's versions by the id of its
    first (as ``records.version_groups``), in one read: the hidden later versions come along.
    ``every_field``: whole rows (for views of them), else what the checks and context need."""
    rows = conversation.messages.filter(
        Q(hidden=False) | Q(role=Message.Role.ASSISTANT, version_of__isnull=False)
    )
    if not every_field:
        rows = rows.only(*_HISTORY_FIELDS)
    rows = heartbeats.with_staleness(rows.annotate(has_images=images.flag()))
    shown: list[Message] = []
    groups: dict[int, list[int]] = {}
    for row in rows:
        if not row.hidden:
            shown.append(row)
        if row.role == Message.Role.ASSISTANT and row.version_of_id is not None:
            groups.setdefault(row.version_of_id, [row.version_of_id]).append(row.pk)
    return shown, {first: tuple(ids) for first, ids in groups.items()}


def context_of(conversation: Conversation, rows: list[Message]) -> list[dict[str, Any]]:
    """Messages sent upstream: the system prompt, then every turn that has usable text.

    Failed answers are left out (their partial text is kept for the reader, not the model),
    and so is every answer's thinking: models expect only the answers of earlier turns. A
    question's images come along as data URLs under "images" (read in one query), unless its
    answer failed: a model that cannot see refuses every request that holds an image, so one
    picture sent to it by mistake would otherwise fail every later message of the chat (Retry
    answers the question itself again, images included).
    """
    messages: list[dict[str, Any]] = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt})
    failed = {
        question.pk
        for question, answer in zip(rows, rows[1:], strict=False)
        if question.role == Message.Role.USER and answer.status == Message.Status.ERROR
    }
    asked = [pk for pk in images.question_ids(rows) if pk not in failed]
    pictures = images.upstream_images(asked)
    for row in rows:
        if row.status == Message.Status.ERROR:
            continue
        if row.role == Message.Role.ASSISTANT and not row.content:
            continue
        message: dict[str, Any] = {"role": row.role, "content": row.content}
        if pictures.get(row.pk):
            message["images"] = pictures[row.pk]
        messages.append(message)
    return messages


def _check_idle(rows: list[Message], live: set[int]) -> None:
    """Refuse a second answer while one streams; settle the ones a dead worker left."""
    streaming = [row for row in rows if row.status == Message.Status.STREAMING]
    orphans = [row for row in streaming if is_orphan(row, live)]
    if orphans:
        settle_answers([row.pk for row in orphans])
        for row in orphans:
            row.status = Message.Status.ERROR
    if len(orphans) < len(streaming):
        raise ClientError(
            gettext("An answer is still streaming: stop it or wait for it to finish.")
        )


def count_request(conversation: Conversation, checks: usage.RequestChecks) -> None:
    """A request counts toward its user's day; it is refused past the token limit, the
    per-minute rate limit or the cap on answers at once (``checks``, read with the
    conversation)."""
    checks.enforce(conversation)
    if conversation.user_id is not None:
        usage.count_request(conversation.user_id)


def _new_answer(
    conversation: Conversation, upstream: providers.Upstream, version_of: int | None = None
) -> Message:
    """The empty answer, not saved yet (``_insert``)."""
    return Message(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        provider_name=upstream.name,
        streamed=conversation.stream,
        heartbeat_at=Now(),  # the database's clock, as every heartbeat (chat.heartbeats)
        version_of_id=version_of,
    )


def _insert(*messages: Message) -> None:
    """Save new messages in one INSERT where the database returns the new ids (PostgreSQL,
    SQLite 3.35 and later), else one INSERT each; in order, so ids follow it."""
    if len(messages) > 1 and connection.features.can_return_rows_from_bulk_insert:
        Message.objects.bulk_create(messages)
    else:
        for message in messages:
            message.save(force_insert=True)


def _conversation_query(marker: Marker, shape: tuple[Any, ...]) -> QuerySet[Conversation]:
    """The owner's conversation, locked, with its provider and what ``checks`` need."""
    by_user, live, _orphan_after, _day, *limits = shape
    checks = usage.RequestChecks(*limits)
    user_id = marker.number("user_id") if by_user else None
    owner = Owner(user_id=user_id, session_key="" if by_user else marker.text("session_key"))
    since = marker.moment("since") if checks.rate_limit else checks.since
    annotations = checks.annotate(user_id, owner.session_key, marker.numbers("live", live), since)
    if by_user:  # what decides which models the user may use, and their daily token limit
        annotations.update(access.query_annotations())
    found = owner.conversations().select_related("provider").annotate(**annotations)
    # Locked until the turn is saved (PostgreSQL; SQLite takes the whole database for writing
    # anyway): two sends at the same instant, on two workers, cannot both find it idle.
    return found.select_for_update(of=("self",)).filter(pk=marker.number("pk")).order_by()


_CONVERSATION = PreparedQuery(_conversation_query)


def _locked(
    owner: Owner, conversation_id: int, live: set[int]
) -> tuple[Conversation, usage.RequestChecks]:
    """The owner's conversation, with its provider and what the request's rate, allowance and
    at-once checks need, in one query (``live``: the owner's answers this worker runs)."""
    # The owner's requests one at a time, on every worker, until the turn is saved: two sends
    # into two conversations cannot both find room under a limit.
    usage.lock_owner(owner.user_id, owner.session_key)
    checks = usage.RequestChecks.limits(owner.user_id)
    # Everything that changes the query's SQL (the day: the token limit's row is today's).
    shape = (
        owner.user_id is not None,
        len(live) if checks.concurrent_limit else 0,  # only the at-once check reads them
        settings.STREAM_ORPHAN_AFTER,
        usage.today() if owner.user_id is not None else None,  # a user's limit may be their own
        checks.rate_limit,
        checks.token_limit,
        checks.concurrent_limit,
    )
    found = _CONVERSATION.run(
        shape,
        user_id=owner.user_id,
        session_key=owner.session_key,
        live=sorted(live),
        since=checks.since,
        pk=conversation_id,
    )
    if not found:
        raise ClientError(gettext("This conversation no longer exists."))
    conversation = found[0]
    if owner.user_id is not None:
        # Read with the conversation; the user's group rules, if they have any, in one query.
        allowed = access.of_row(conversation, owner.user_id)
        if not allowed.allows(conversation.provider_id, conversation.model):
            upstream = providers.upstream_of(conversation.provider_id, conversation.provider)
            access.check_model_allowed(allowed, upstream, conversation.model)
        checks = replace(checks, token_limit=allowed.token_limit)
    return conversation, checks


def create_turn(
    owner: Owner,
    conversation_id: int,
    text: str,
    live: set[int],
    *,
    standalone: bool = False,
    image_ids: Sequence[uuid.UUID] = (),
) -> Turn:
    """Save the user's message (before anything is sent upstream) and an empty answer.

    ``standalone`` sends the message without the conversation's earlier turns (each trial of
    a comparison is the same single question, not a follow-up). ``image_ids``: the owner's
    unsent uploads that go with the message (``images.claim``).
    """
    text = message_text(text)
    with transaction.atomic():
        # Every request counts, each side of each trial of a comparison too.
        conversation, checks = _locked(owner, conversation_id, live)
        upstream = _upstream(conversation)
        rows = _history(conversation)
        _check_idle(rows, live)
        count_request(conversation, checks)
        # A Retry button on the previous answer goes stale once a new question is asked.
        stale_retry = (
            rows[-1].pk
            if rows and rows[-1].status in {Message.Status.ERROR, Message.Status.STOPPED}
            else None
        )
        user = Message(conversation=conversation, role=Message.Role.USER, content=text)
        answer = _new_answer(conversation, upstream)
        _insert(user, answer)
        images.claim(owner, image_ids, user)
        user.has_images = bool(image_ids)  # type: ignore[attr-defined]  # as ``images.flag``
        conversation.updated_at = timezone.now()
        new_title = "" if conversation.title else " ".join(text.split())[:60]
        conversation.title = conversation.title or new_title
        conversation.save(update_fields=["updated_at", "title"])
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=context_of(conversation, [user] if standalone else [*rows, user]),
        answer=fragments.message_view(answer, is_latest=True),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        owner=owner,
        user=fragments.message_view(user, images=images.of_questions([user]).get(user.pk, ())),
        stale_retry=stale_retry,
        new_title=new_title,
    )


def message_text(text: str) -> str:
    """A message as it will be saved, or a ClientError saying why it cannot be."""
    text = text.strip()
    if not text:
        raise ClientError(gettext("Type a message first."))
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ClientError(
            gettext("That message is too long (%(length)s characters; at most %(limit)s).")
            % {"length": f"{len(text):,}", "limit": f"{limit:,}"}
        )
    return text


class LatestAnswer(NamedTuple):
    """What Retry and Continue read, locked, before they touch the latest answer."""

    conversation: Conversation
    upstream: providers.Upstream
    rows: list[Message]  # the conversation's shown messages
    versions: dict[int, tuple[int, ...]]
    answer: Message  # the latest of ``rows``
    checks: usage.RequestChecks


def latest_answer(
    owner: Owner, conversation_id: int, answer_id: int, live: set[int], refusal: str
) -> LatestAnswer:
    """In the caller's transaction: the owner's conversation, locked, whose latest message must
    be the answer ``answer_id`` (else ``refusal``) with nothing streaming."""
    conversation, checks = _locked(owner, conversation_id, live)
    upstream = _upstream(conversation)
    rows, versions = _history_and_versions(conversation)
    _check_idle(rows, live)
    latest = rows[-1] if rows else None
    if latest is None or latest.pk != answer_id or latest.role != Message.Role.ASSISTANT:
        raise ClientError(refusal)
    return LatestAnswer(conversation, upstream, rows, versions, latest, checks)


def create_retry(owner: Owner, conversation_id: int, answer_id: int, live: set[int]) -> Turn:
    """A new version of the latest answer (Retry, Regenerate), answering the same question.

    The version it replaces is kept, hidden; the reader can show it again (‹ 1 / 2 ›), and
    whichever version is shown is the one later questions send as context.
    """
    with transaction.atomic():
        found = latest_answer(
            owner,
            conversation_id,
            answer_id,
            live,
            gettext("Only the latest answer can be retried."),
        )
        conversation, upstream, rows, versions, latest = found[:5]
        count_request(conversation, found.checks)
        first = latest.version_of_id or latest.pk
        Message.objects.filter(pk=latest.pk).update(hidden=True)
        answer = _new_answer(conversation, upstream, version_of=first)
        _insert(answer)
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
        version_ids = (*versions.get(first, (first,)), answer.pk)
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=context_of(conversation, rows[:-1]),
        answer=fragments.message_view(answer, is_latest=True, version_ids=version_ids),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        owner=owner,
        stale_retry=latest.pk,
        replaces=latest.pk,
    )


def create_edit(
    owner: Owner, conversation_id: int, message_id: int, text: str, live: set[int]
) -> Turn:
    """Replace one of the user's messages with ``text`` and answer it anew.

    The edited message and every turn after it leave the conversation: hidden, not deleted
    (exports keep them, marked, and their answers still count toward the rate limit). The new
    text is saved before anything is sent upstream, and answered with the turns before it.
    """
    text = message_text(text)
    with transaction.atomic():
        conversation, checks = _locked(owner, conversation_id, live)
        upstream = _upstream(conversation)
        rows, versions = _history_and_versions(conversation, every_field=True)
        _check_idle(rows, live)
        mine = [row.pk == message_id and row.role == Message.Role.USER for row in rows]
        index = mine.index(True) if any(mine) else None
        if index is None:  # unknown, someone else's, an answer, or already replaced: all alike
            raise ClientError(gettext("That message can no longer be edited."))
        count_request(conversation, checks)
        edited = rows[index]
        Message.objects.filter(pk__in=[row.pk for row in rows[index:]]).update(hidden=True)
        user = Message(
            conversation=conversation,
            role=Message.Role.USER,
            content=text,
            version_of_id=edited.version_of_id or edited.pk,
        )
        answer = _new_answer(conversation, upstream)
        _insert(user, answer)
        if edited.has_images:  # type: ignore[attr-defined]  # (``images.flag``)
            images.copy_to(edited, user)  # the edited question keeps its images
        user.has_images = edited.has_images  # type: ignore[attr-defined]
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
        earlier = rows[:index]
        # As ``records.shown_views(..., latest=False)``, with the versions read above.
        pictures = images.of_questions(earlier)
        log = tuple(
            fragments.message_view(
                row, version_ids=versions_of(row, versions), images=pictures.get(row.pk, ())
            )
            for row in earlier
        )
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=context_of(conversation, [*earlier, user]),
        answer=fragments.message_view(answer, is_latest=True),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        owner=owner,
        user=fragments.message_view(user, images=images.of_questions([user]).get(user.pk, ())),
        log=log,
    )
