"""The generation service: runs one answer from the upstream to every socket and the database.

A generation is an ``asyncio`` task owned by this service, not by a websocket: closing or
reloading the tab does not stop it, Stop cancels it (which closes the upstream HTTP request at
once, so no more tokens are generated or billed). Two coroutines per answer:

- the reader consumes ``llm.ChatClient.stream_reply`` events into an in-memory buffer;
- the publisher sends what the buffer holds to the conversation's channel-layer group, at most
  one frame per ``STREAM_FRAME_INTERVAL`` (the first token goes out at once, nothing is dropped).

One saver task per service writes the text so far of every growing answer once per
``STREAM_SAVE_INTERVAL``, in one database call (never per token, never per stream).

Frames carry ready HTML and a per-answer sequence number, so a socket that joins mid-answer
takes a snapshot and skips frames it already has.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext

from . import fragments, llm, providers, usage
from .exceptions import ClientError
from .layer_probe import PROBE_EVENT, LayerProbe, can_probe
from .logformat import log_answer
from .markdown import BlockSplitter
from .models import Conversation, Message, answer_outcome, conversation_group
from .owners import Owner

logger = logging.getLogger(__name__)

FRAME_EVENT = "chat.frame"
# Every worker's service listens in this group, for requests about answers it runs.
WORKERS_GROUP = "streamside-workers"
STOP_EVENT = "generation.stop"
SNAPSHOT_REQUEST = "generation.snapshot"
SNAPSHOT_EVENT = "chat.snapshot"  # the reply, to one socket's channel
GROUP_REFRESH = 3600.0  # seconds; channels-redis forgets group members after a day
FINAL_FRAME_GRACE = 0.5  # seconds a stopping worker waits after its last answer ended
INTERRUPTED_MESSAGE = "The server restarted before this answer finished. Retry to ask again."


class ServerStopped(llm.UpstreamInterrupted):
    """This worker shut down mid-answer (SIGTERM past the grace): not the upstream's fault."""

    kind = "interrupted"
    default_message = "The server stopped before this answer finished. Retry to ask again."


# --- Database work (sync; async callers go through database_sync_to_async) ------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """The rows a send or retry created, as plain data for the generation and the fragments."""

    conversation_id: int
    model: str
    stream: bool
    context: list[dict[str, str]]
    answer: fragments.MessageView
    upstream: providers.Upstream
    options: dict[str, Any] = field(default_factory=dict)
    user_id: int | None = None  # whose usage the answer counts toward (None: a session)
    user: fragments.MessageView | None = None
    stale_retry: int | None = None  # the answer whose Retry button a new turn makes stale
    new_title: str = ""
    replaces: int | None = None  # a new version takes this (now hidden) version's place
    log: tuple[fragments.MessageView, ...] | None = None  # after an edit: the log before it
    # The language of the socket that asked (active when the turn is made): every frame of
    # the answer, broadcast to all sockets showing the conversation, is written in it.
    language: str = field(default_factory=lambda: translation.get_language() or "")


def get_conversation(owner: Owner, conversation_id: int) -> Conversation | None:
    return owner.conversations().filter(pk=conversation_id).first()


def request_options(conversation: Conversation) -> dict[str, Any]:
    """The conversation's request options that are set; unset ones are not sent at all."""
    names = ("temperature", "top_p", "max_tokens", "seed", "enable_thinking")
    return {n: getattr(conversation, n) for n in names if getattr(conversation, n) is not None}


def _upstream(conversation: Conversation) -> providers.Upstream:
    """The conversation's provider, checked before anything is saved or sent."""
    upstream = providers.upstream_for(conversation.provider_id)
    if conversation.model not in upstream.models:
        raise ClientError(
            gettext(
                "The model “%(model)s” is no longer offered by %(provider)s: pick another model."
            )
            % {"model": conversation.model, "provider": upstream.name}
        )
    problem = upstream.missing_key()
    if problem:
        raise ClientError(problem)
    return upstream


def _history(conversation: Conversation) -> list[Message]:
    """The conversation's messages in order: read once per turn, for every check and context."""
    return list(
        conversation.messages.filter(hidden=False).only(
            "id", "role", "content", "status", "created_at", "heartbeat_at", "version_of"
        )
    )


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
    return [
        fragments.message_view(
            row, is_latest=latest and index == len(rows) - 1, version_ids=versions_of(row, groups)
        )
        for index, row in enumerate(rows)
    ]


def _context(conversation: Conversation, rows: list[Message]) -> list[dict[str, str]]:
    """Messages sent upstream: the system prompt, then every turn that has usable text.

    Failed answers are left out (their partial text is kept for the reader, not the model),
    and so is every answer's thinking: models expect only the answers of earlier turns.
    """
    messages: list[dict[str, str]] = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt})
    for row in rows:
        if row.status == Message.Status.ERROR:
            continue
        if row.role == Message.Role.ASSISTANT and not row.content:
            continue
        messages.append({"role": row.role, "content": row.content})
    return messages


def settle_answers(pks: list[int]) -> None:
    """Mark these answers interrupted (text kept) if they are still "streaming"."""
    Message.objects.filter(pk__in=pks, status=Message.Status.STREAMING).update(
        status=Message.Status.ERROR,
        error_kind="interrupted",
        error_message=INTERRUPTED_MESSAGE,
        completed_at=timezone.now(),
    )


def is_orphan(row: Message, live: set[int]) -> bool:
    """Streaming, yet neither this worker nor any other has touched it lately: its worker died
    (SIGKILL, crash, power). Live answers of other workers keep a fresh heartbeat."""
    if row.pk in live:
        return False
    beat = row.heartbeat_at
    return beat is None or timezone.now() - beat > timedelta(seconds=settings.STREAM_ORPHAN_AFTER)


def settle_orphans(conversation: Conversation, live: set[int]) -> None:
    """Mark as interrupted the answers a dead worker left "streaming", keeping their text."""
    streaming = conversation.messages.filter(status=Message.Status.STREAMING).only(
        "id", "heartbeat_at"
    )
    orphans = [row.pk for row in streaming if is_orphan(row, live)]
    if orphans:
        settle_answers(orphans)


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


def _count_request(conversation: Conversation, *, rate_checked: bool = False) -> None:
    """A request counts toward its user's day (refused past the token limit), and is refused
    past the per-minute rate limit unless its caller checked that already."""
    if not rate_checked:
        usage.check_rate(conversation.user_id, conversation.session_key)
    if conversation.user_id is not None:
        usage.check_allowance(conversation.user_id)
        usage.count_request(conversation.user_id)


def _new_answer(
    conversation: Conversation, upstream: providers.Upstream, version_of: int | None = None
) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        provider_name=upstream.name,
        streamed=conversation.stream,
        heartbeat_at=timezone.now(),
        version_of_id=version_of,
    )


def _owned(owner: Owner, conversation_id: int) -> Conversation:
    conversation = get_conversation(owner, conversation_id)
    if conversation is None:
        raise ClientError(gettext("This conversation no longer exists."))
    return conversation


def create_turn(
    owner: Owner, conversation_id: int, text: str, live: set[int], *, standalone: bool = False
) -> Turn:
    """Save the user's message (before anything is sent upstream) and an empty answer.

    ``standalone`` sends the message without the conversation's earlier turns (each trial of
    a comparison is the same single question, not a follow-up).
    """
    text = _message_text(text)
    with transaction.atomic():
        conversation = _owned(owner, conversation_id)
        upstream = _upstream(conversation)
        rows = _history(conversation)
        _check_idle(rows, live)
        _count_request(conversation, rate_checked=standalone)  # comparisons check per run
        # A Retry button on the previous answer goes stale once a new question is asked.
        stale_retry = (
            rows[-1].pk
            if rows and rows[-1].status in {Message.Status.ERROR, Message.Status.STOPPED}
            else None
        )
        user = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=text
        )
        answer = _new_answer(conversation, upstream)
        conversation.updated_at = timezone.now()
        new_title = "" if conversation.title else " ".join(text.split())[:60]
        conversation.title = conversation.title or new_title
        conversation.save(update_fields=["updated_at", "title"])
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=_context(conversation, [user] if standalone else [*rows, user]),
        answer=fragments.message_view(answer, is_latest=True),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        user=fragments.message_view(user),
        stale_retry=stale_retry,
        new_title=new_title,
    )


def _message_text(text: str) -> str:
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


def create_retry(owner: Owner, conversation_id: int, answer_id: int, live: set[int]) -> Turn:
    """A new version of the latest answer (Retry, Regenerate), answering the same question.

    The version it replaces is kept, hidden; the reader can show it again (‹ 1 / 2 ›), and
    whichever version is shown is the one later questions send as context.
    """
    with transaction.atomic():
        conversation = _owned(owner, conversation_id)
        upstream = _upstream(conversation)
        rows = _history(conversation)
        _check_idle(rows, live)
        latest = rows[-1] if rows else None
        if latest is None or latest.pk != answer_id or latest.role != Message.Role.ASSISTANT:
            raise ClientError(gettext("Only the latest answer can be retried."))
        _count_request(conversation)
        first = latest.version_of_id or latest.pk
        Message.objects.filter(pk=latest.pk).update(hidden=True)
        answer = _new_answer(conversation, upstream, version_of=first)
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
        version_ids = version_groups(conversation.pk)[first]
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=_context(conversation, rows[:-1]),
        answer=fragments.message_view(answer, is_latest=True, version_ids=version_ids),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
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
    text = _message_text(text)
    with transaction.atomic():
        conversation = _owned(owner, conversation_id)
        upstream = _upstream(conversation)
        rows = list(conversation.messages.filter(hidden=False))
        _check_idle(rows, live)
        mine = [row.pk == message_id and row.role == Message.Role.USER for row in rows]
        index = mine.index(True) if any(mine) else None
        if index is None:  # unknown, someone else's, an answer, or already replaced: all alike
            raise ClientError(gettext("That message can no longer be edited."))
        _count_request(conversation)
        edited = rows[index]
        Message.objects.filter(pk__in=[row.pk for row in rows[index:]]).update(hidden=True)
        user = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=text,
            version_of_id=edited.version_of_id or edited.pk,
        )
        answer = _new_answer(conversation, upstream)
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
        earlier = rows[:index]
        log = tuple(shown_views(conversation.pk, earlier, latest=False))
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=_context(conversation, [*earlier, user]),
        answer=fragments.message_view(answer, is_latest=True),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        user=fragments.message_view(user),
        log=log,
    )


def save_progress(rows: list[tuple[int, str, str]], alive: Sequence[int] = ()) -> None:
    """Save the text so far of several growing answers, and the heartbeat of every answer this
    worker runs (``alive``), in one transaction.

    Only rows still streaming are touched, so a late progress save never undoes a final one.
    """
    now = timezone.now()
    with transaction.atomic():
        for answer_id, content, reasoning in rows:
            Message.objects.filter(pk=answer_id, status=Message.Status.STREAMING).update(
                content=content, reasoning=reasoning, heartbeat_at=now
            )
        changed = {row[0] for row in rows}
        quiet = [pk for pk in alive if pk not in changed]
        if quiet:
            Message.objects.filter(pk__in=quiet, status=Message.Status.STREAMING).update(
                heartbeat_at=now
            )


def streaming_answers(conversation_id: int, exclude: set[int]) -> list[int]:
    """The conversation's answers marked streaming, other than ``exclude`` (this worker's)."""
    rows = Message.objects.filter(conversation_id=conversation_id, status=Message.Status.STREAMING)
    return [pk for pk in rows.values_list("pk", flat=True) if pk not in exclude]


def saved_answer(answer_id: int, live: set[int] | None = None) -> fragments.MessageView | None:
    """An answer as saved. Given ``live`` (this worker's answers), one a dead worker left
    "streaming" is settled as interrupted first: a socket whose frames stopped coming shows
    that, never "streaming" forever."""
    message = Message.objects.filter(pk=answer_id).first()
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
    views = shown_views(conversation_id, list(shown.order_by("pk")), latest=with_retry)
    return fragments.log_frame(conversation_id, views)


def save_final(answer_id: int, fields: Mapping[str, Any], user_id: int | None = None) -> bool:
    """Write the finished answer and add its tokens to its user's day; False if its
    conversation was deleted meanwhile."""
    with transaction.atomic():
        saved = bool(Message.objects.filter(pk=answer_id).update(**fields))
        if user_id is not None:
            usage.add_tokens(user_id, fields.get("prompt_tokens"), fields.get("completion_tokens"))
    return saved


# --- The running generation ------------------------------------------------------------------


@dataclass(eq=False)
class Generation:
    """One answer in flight: its text so far, timings and the wake-up for its publisher."""

    turn: Turn
    origin: str | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    pending_text: list[str] = field(default_factory=list)
    pending_reasoning: list[str] = field(default_factory=list)
    seq: int = 0
    lost_frames: int = 0  # frames the channel layer refused (logged once per answer)
    # Ours, per answer: in the log lines and sent upstream as X-Request-Id (beside theirs).
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # How many parts of text/reasoning the published frames hold (what a snapshot may show).
    shown_text: int = 0
    shown_reasoning: int = 0
    blocks: BlockSplitter = field(default_factory=BlockSplitter)
    saved_size: tuple[int, int] = (0, 0)  # parts of text/reasoning in the last progress save
    committed: int = 0  # characters of shown text already sent as rendered markdown blocks
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None  # thinking or answer, whichever came first
    first_reasoning_at: float | None = None
    first_text_at: float | None = None
    finished_at: float | None = None
    usage: llm.Usage | None = None
    finish_reason: str = ""
    request_id: str = ""  # the upstream's id for this answer, for support
    error: llm.UpstreamError | None = None
    retrying: llm.Retrying | None = None  # the last refusal asked again after, before a token
    stop_requested: bool = False
    done: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def answer_id(self) -> int:
        return self.turn.answer.id

    @property
    def language(self) -> str:
        """The language its frames are written in (that of the socket that asked)."""
        return self.turn.language or settings.LANGUAGE_CODE

    @property
    def group(self) -> str:
        return conversation_group(self.turn.conversation_id)

    def elapsed_ms(self, until: float | None = None) -> float:
        return ((until or time.perf_counter()) - self.started) * 1000

    def thinking_elapsed_s(self) -> float | None:
        """Seconds of thinking so far while the model still thinks (for a live timer)."""
        if self.first_reasoning_at is None or self.first_text_at is not None:
            return None
        return time.perf_counter() - self.first_reasoning_at

    def thought_ms(self) -> float | None:
        """How long the model thought, once its answer has begun."""
        if self.first_reasoning_at is None or self.first_text_at is None:
            return None
        return (self.first_text_at - self.first_reasoning_at) * 1000

    def live_view(self) -> fragments.MessageView:
        """The answer as it stands, for a socket that joins mid-stream."""
        base = self.turn.answer
        return fragments.MessageView(
            id=base.id,
            role=base.role,
            status=Message.Status.STREAMING,
            content="".join(self.text[: self.shown_text]),
            reasoning="".join(self.reasoning[: self.shown_reasoning]),
            model=base.model,
            streamed=base.streamed,
            elapsed_s=self.elapsed_ms() / 1000,
            thinking_s=self.thinking_elapsed_s(),
            thinking_ms=self.thought_ms(),
            seq=self.seq,
            is_latest=True,
            committed=self.committed,
            buffered=base.buffered,
            provider_name=base.provider_name,
            conversation_id=self.turn.conversation_id,
            version_ids=base.version_ids,
            retry_note=self.retry_note(),
        )

    def retry_note(self) -> str:
        """Why the first word is late, while it still is (in the active language)."""
        if self.retrying is None or self.first_token_at is not None:
            return ""
        r = self.retrying
        return fragments.retry_note(r.attempt, r.retries, r.wait, r.reason)

    def outcome(self) -> dict[str, Any]:
        """Columns of the finished answer row."""
        status = Message.Status.COMPLETE
        fields: dict[str, Any] = {}
        if self.error is not None:
            status = Message.Status.ERROR
            fields.update(
                error_kind=self.error.kind,
                error_message=self.error.message,
                retry_after=self.error.retry_after,
                request_id=self.error.request_id or self.request_id,
            )
        elif self.stop_requested:
            status = Message.Status.STOPPED
        usage = self.usage
        end = self.finished_at or time.perf_counter()
        thinking_ms = None
        if self.first_reasoning_at is not None:
            thinking_ms = ((self.first_text_at or end) - self.first_reasoning_at) * 1000
        fields.update(
            status=status,
            request_id=fields.get("request_id") or self.request_id,
            content="".join(self.text),
            reasoning="".join(self.reasoning),
            finish_reason=self.finish_reason,
            ttft_ms=self.elapsed_ms(self.first_token_at) if self.first_token_at else None,
            thinking_ms=thinking_ms,
            answer_ms=self.elapsed_ms(self.first_text_at) if self.first_text_at else None,
            total_ms=self.elapsed_ms(end),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            completed_at=timezone.now(),
        )
        return fields


class GenerationService:
    """Starts, relays, saves and stops generations for one event loop (one Daphne process)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.clients: dict[tuple[Any, ...], llm.ChatClient] = {}
        self.running: dict[int, Generation] = {}
        self.frame_interval: float = settings.STREAM_FRAME_INTERVAL
        self.save_interval: float = settings.STREAM_SAVE_INTERVAL
        self._saver: asyncio.Task[None] | None = None
        self.closing = False  # shutting down: answers in flight finish, no new ones start
        self._listener: asyncio.Task[None] | None = None
        self.probe: LayerProbe | None = None  # is this worker still hearing Redis?
        self._probe: asyncio.Task[None] | None = None  # held: a task nobody holds may vanish

    def client_for(self, upstream: providers.Upstream) -> llm.ChatClient:
        """One client per upstream and key, kept so what it learns (no stream_options) sticks."""
        api_key = upstream.api_key()
        key = (upstream.protocol, upstream.base_url, api_key, upstream.include_usage,
               upstream.incremental)  # fmt: skip
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = llm.ChatClient(
                self.http,
                upstream.base_url,
                api_key,
                protocol=upstream.protocol,
                include_usage=upstream.include_usage,
                incremental=upstream.incremental,
                retries=settings.LLM_RETRIES,
                max_retry_wait=settings.LLM_RETRY_MAX_WAIT,
                total_timeout=settings.LLM_TOTAL_TIMEOUT,
            )
        return client

    # Public API, called by the consumer and views ------------------------------------------

    async def send(
        self, owner: Owner, conversation_id: int, text: str, origin: str | None = None
    ) -> Generation:
        """Save the user's message, then start answering it."""
        self._refuse_while_closing()
        turn = await database_sync_to_async(create_turn)(
            owner, conversation_id, text, set(self.running)
        )
        return await self._start(turn, origin)

    async def retry(
        self, owner: Owner, conversation_id: int, answer_id: int, origin: str | None = None
    ) -> Generation:
        self._refuse_while_closing()
        turn = await database_sync_to_async(create_retry)(
            owner, conversation_id, answer_id, set(self.running)
        )
        return await self._start(turn, origin)

    async def edit(
        self, owner: Owner, conversation_id: int, message_id: int, text: str
    ) -> Generation:
        """Save the edited message (the turns after it leave the log), then answer it."""
        self._refuse_while_closing()
        turn = await database_sync_to_async(create_edit)(
            owner, conversation_id, message_id, text, set(self.running)
        )
        # No origin: the composer keeps what it holds (the edit form goes with the old log).
        return await self._start(turn, None)

    async def stop(self, conversation_id: int, answer_id: int) -> bool:
        """Cancel an answer in flight, on this worker or any other; the upstream connection
        closes as its task unwinds. True if it ran here."""
        if self._stop_here(conversation_id, answer_id):
            return True
        # Another worker may run it: every worker hears the request; the one running it stops.
        layer = get_channel_layer()
        assert layer is not None
        try:
            await layer.group_send(
                WORKERS_GROUP,
                {"type": STOP_EVENT, "conversation": conversation_id, "answer": answer_id},
            )
        except Exception as exc:  # Redis unreachable: say so, lose nothing
            logger.warning("could not pass Stop to the other workers: %s", exc)
            raise ClientError(
                gettext("Stop could not reach the server running that answer: try again.")
            ) from exc
        return False

    def _stop_here(self, conversation_id: int, answer_id: int) -> bool:
        generation = self.running.get(answer_id)
        if generation is None or generation.turn.conversation_id != conversation_id:
            return False
        generation.stop_requested = True
        if generation.reader is not None:
            generation.reader.cancel()
        return True

    def listen(self) -> None:
        """Start hearing other workers' requests (Stop pressed on a socket they serve)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="generation-control")

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        # The default prefix on purpose: channels-redis reads a process's channels through one
        # shared receive loop, and a channel of another prefix would hold it for seconds.
        channel = await layer.new_channel()
        probe = LayerProbe(layer, channel)
        if can_probe(layer):
            self.probe = probe
            self._probe = asyncio.create_task(probe.run(), name="channel-layer-probe")
        joined: float | None = None  # not 0.0: the monotonic clock starts near 0 at boot
        while True:
            if joined is None or time.monotonic() - joined > GROUP_REFRESH:  # membership expires
                await layer.group_add(WORKERS_GROUP, channel)
                joined = time.monotonic()
            try:
                message = await layer.receive(channel)
            except Exception as exc:  # a Redis hiccup must not end the listening for good
                if "Timeout" in type(exc).__name__:
                    continue  # an idle blocking read that redis-py gave up on: read again
                logger.exception("listening for other workers' requests failed")
                await asyncio.sleep(1)
                continue
            kind = message.get("type")
            if kind == PROBE_EVENT:
                probe.hear(message)
            elif kind == STOP_EVENT:
                self._stop_here(int(message["conversation"]), int(message["answer"]))
            elif kind == SNAPSHOT_REQUEST:
                try:
                    await self._send_snapshot(message)
                except Exception:  # the asker falls back to the database
                    logger.warning("could not send a snapshot of answer %s", message.get("answer"))

    async def request_snapshot(self, conversation_id: int, answer_id: int, reply_to: str) -> None:
        """Ask whichever worker generates the answer to send ``reply_to`` its text so far."""
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(
            WORKERS_GROUP,
            {
                "type": SNAPSHOT_REQUEST,
                "conversation": conversation_id,
                "answer": answer_id,
                "reply_to": reply_to,
                "language": translation.get_language() or "",  # the asking socket's
            },
        )

    async def _send_snapshot(self, request: Mapping[str, Any]) -> None:
        generation = self.running.get(int(request["answer"]))
        if generation is None or generation.turn.conversation_id != int(request["conversation"]):
            return  # not ours (or already finished: its final frame went to the group)
        # No await between reading the view and its seq: the snapshot holds frames 1..seq.
        with translation.override(request.get("language") or generation.language):
            frame = fragments.snapshot_frame(generation.live_view())
        reply = {
            "type": SNAPSHOT_EVENT,
            "answer": generation.answer_id,
            "seq": generation.seq,
            "html": frame.body,
            "chrome": frame.chrome,
        }
        layer = get_channel_layer()
        assert layer is not None
        await layer.send(str(request["reply_to"]), reply)

    async def drain(self, grace: float) -> None:
        """On a clean shutdown: let the answers in flight finish for up to ``grace`` seconds,
        then stop the rest; every one is saved (complete, or interrupted with its text)."""
        self.closing = True
        tasks = [g.task for g in self.running.values() if g.task is not None]
        if not tasks:
            return
        logger.info("shutting down: %d answers in flight get %.0f s to finish", len(tasks), grace)
        await asyncio.wait(tasks, timeout=grace)
        late = [g for g in self.running.values() if g.task is not None]
        for generation in late:
            if generation.reader is not None:
                generation.reader.cancel()  # saved as "The server stopped before…"
        if late:
            await asyncio.wait([g.task for g in late if g.task is not None], timeout=10)
            logger.info("shutting down: %d answers stopped and saved", len(late))
        # The final frames were just published: give them a moment to reach this worker's own
        # sockets through the channel layer before the connections close.
        await asyncio.sleep(FINAL_FRAME_GRACE)

    def _refuse_while_closing(self) -> None:
        if self.closing:
            raise ClientError(gettext("The server is restarting: send that again in a moment."))

    def snapshots(self, conversation_id: int) -> list[Generation]:
        return [g for g in self.running.values() if g.turn.conversation_id == conversation_id]

    # Internals ----------------------------------------------------------------------------

    async def start_turns(self, turns: Sequence[Turn], origin: str | None) -> list[Generation]:
        """Start several saved turns as close to the same instant as possible (comparisons)."""
        generations = [await self._announce(turn, origin) for turn in turns]
        for generation in generations:
            self._launch(generation)
        return generations

    async def _start(self, turn: Turn, origin: str | None) -> Generation:
        generation = await self._announce(turn, origin)
        self._launch(generation)
        return generation

    async def _announce(self, turn: Turn, origin: str | None) -> Generation:
        """Register the answer and show the turn; its frames must precede any delta."""
        generation = Generation(turn=turn, origin=origin)
        self.running[generation.answer_id] = generation
        with translation.override(generation.language):
            frame = fragments.turn_frame(
                turn.conversation_id,
                turn.user,
                turn.answer,
                stale_retry=turn.stale_retry,
                new_title=turn.new_title,
                replaces=turn.replaces,
                log=turn.log,
            )
        await self._publish(generation, frame, kind="turn")
        return generation

    def _launch(self, generation: Generation) -> None:
        turn = generation.turn
        log_answer(
            "answer.started",
            answer_id=generation.answer_id,
            conversation_id=turn.conversation_id,
            user_id=turn.user_id,
            model=turn.model,
            provider=turn.upstream.name,
            request_id=generation.trace_id,
        )
        generation.reader = asyncio.create_task(
            self._read(generation), name=f"generation-{generation.answer_id}-reader"
        )
        generation.task = asyncio.create_task(
            self._run(generation), name=f"generation-{generation.answer_id}"
        )
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._save_loop(), name="generation-saver")

    async def _save_loop(self) -> None:
        """While answers run, save the grown ones and every one's heartbeat once per interval,
        in one database call.

        One call for every stream, not one per stream: at hundreds of streams, a thread hop
        and a transaction each would cost more than the relay itself.
        """
        while self.running:
            await asyncio.sleep(self.save_interval)
            rows = []
            for generation in list(self.running.values()):
                size = (len(generation.text), len(generation.reasoning))
                if not generation.done and size != generation.saved_size:
                    generation.saved_size = size
                    rows.append(
                        (
                            generation.answer_id,
                            "".join(generation.text),
                            "".join(generation.reasoning),
                        )
                    )
            alive = [g.answer_id for g in self.running.values() if not g.done]
            if rows or alive:
                try:
                    await database_sync_to_async(save_progress)(rows, alive)
                except Exception:  # the final save still comes; keep the loop alive
                    logger.exception("saving %d answers in progress failed", len(rows))

    async def _publish(
        self, generation: Generation, frame: fragments.Frame | str, *, kind: str
    ) -> None:
        if isinstance(frame, str):
            frame = fragments.Frame(frame)
        generation.seq += 1
        layer = get_channel_layer()
        assert layer is not None
        try:
            await layer.group_send(
                generation.group,
                {
                    "type": FRAME_EVENT,
                    "kind": kind,
                    "conversation": generation.turn.conversation_id,
                    "answer": generation.answer_id,
                    "seq": generation.seq,
                    "origin": generation.origin,
                    "html": frame.body,
                    "chrome": frame.chrome,
                },
            )
        except Exception as exc:  # any layer failure: the answer goes on
            # The channel layer is only a courier (Redis restarting, say): the answer is still
            # generated and saved, and sockets see the gap in seq and refill from a snapshot.
            generation.lost_frames += 1
            if generation.lost_frames == 1:
                logger.warning(
                    "answer %d: the channel layer refused a frame (%s: %s); its sockets "
                    "will refill from a snapshot or the database",
                    generation.answer_id,
                    type(exc).__name__,
                    exc,
                )

    async def _run(self, generation: Generation) -> None:
        """Wait for the reader however it ends, then let the publisher finish and save."""
        reader = generation.reader
        assert reader is not None
        publisher = asyncio.create_task(self._publish_in_language(generation))
        try:
            await asyncio.wait([reader])
        finally:
            if not reader.done():  # this task itself was cancelled: the process is stopping
                reader.cancel()
                await asyncio.wait([reader])
            generation.finished_at = time.perf_counter()
            if reader.cancelled():
                if not generation.stop_requested:
                    generation.error = ServerStopped()
            elif (exc := reader.exception()) is not None:
                # A bug must not leave the answer "streaming" forever.
                logger.error("generation %s failed", generation.answer_id, exc_info=exc)
                generation.error = llm.UpstreamProtocolError(
                    f"Internal error ({type(exc).__name__}); the partial answer was kept."
                )
            generation.done = True
            generation.wake.set()
            try:
                await asyncio.shield(publisher)
            finally:
                self.running.pop(generation.answer_id, None)

    async def _read(self, generation: Generation) -> None:
        turn = generation.turn
        client = self.client_for(turn.upstream)
        async for event in client.stream_reply(
            turn.model,
            turn.context,
            stream=turn.stream or turn.answer.buffered,
            options=turn.options,
            request_id=generation.trace_id,
        ):
            if isinstance(event, llm.TextDelta | llm.ReasoningDelta):
                now = time.perf_counter()
                if generation.first_token_at is None:
                    generation.first_token_at = now
                if isinstance(event, llm.TextDelta):
                    if generation.first_text_at is None:
                        generation.first_text_at = now
                    generation.text.append(event.text)
                    generation.pending_text.append(event.text)
                else:
                    if generation.first_reasoning_at is None:
                        generation.first_reasoning_at = now
                    generation.reasoning.append(event.text)
                    generation.pending_reasoning.append(event.text)
                generation.wake.set()
            elif isinstance(event, llm.Usage):
                generation.usage = event
            elif isinstance(event, llm.Finished):
                generation.finish_reason = event.reason
                generation.request_id = event.request_id or ""
            elif isinstance(event, llm.Failed):
                generation.error = event.error
            elif isinstance(event, llm.Retrying):
                generation.retrying = event
                generation.wake.set()

    async def _publish_in_language(self, generation: Generation) -> None:
        """The publisher, writing every frame in the language of the socket that asked."""
        with translation.override(generation.language):
            await self._publish_loop(generation)

    async def _publish_loop(self, generation: Generation) -> None:
        """Send coalesced deltas; at the end save the answer, then send the final frame."""
        sent_first = sent_reasoning = sent_text = False
        told: llm.Retrying | None = None
        while True:
            await generation.wake.wait()
            generation.wake.clear()
            # Read before draining: text that lands after this is still flushed next round.
            finished = generation.done
            if generation.retrying is not told and not finished:
                told = generation.retrying
                if note := generation.retry_note():  # with or without streaming: a late answer
                    await self._publish(
                        generation, fragments.retry_frame(generation.answer_id, note), kind="delta"
                    )
            text = "".join(generation.pending_text)
            reasoning = "".join(generation.pending_reasoning)
            generation.pending_text.clear()
            generation.pending_reasoning.clear()
            if (text or reasoning) and generation.turn.stream:
                # No await between here and the seq increment in _publish: a snapshot taken
                # meanwhile holds exactly the frames up to that seq.
                generation.shown_text = len(generation.text)
                generation.shown_reasoning = len(generation.reasoning)
                block = generation.blocks.feed(text) if text else ""
                generation.committed += len(block)
                thinking_began = bool(reasoning) and not sent_reasoning
                thought_ms = generation.thought_ms() if text and not sent_text else None
                frame = fragments.delta_frame(
                    generation.answer_id,
                    generation.seq + 1,
                    text,
                    reasoning,
                    not sent_first,
                    block=block,
                    tail=generation.blocks.tail,
                    thinking_began=thinking_began,
                    thought_ms=thought_ms,
                )
                sent_reasoning = sent_reasoning or bool(reasoning)
                sent_text = sent_text or bool(text)
                await self._publish(generation, frame, kind="delta")
                sent_first = True
            if finished:
                break
            await asyncio.sleep(self.frame_interval)
        fields = generation.outcome()
        await database_sync_to_async(save_final)(
            generation.answer_id, fields, generation.turn.user_id
        )
        log_answer(
            "answer.finished",
            answer_id=generation.answer_id,
            request_id=generation.trace_id,
            upstream_request_id=fields.get("request_id") or None,
            outcome=answer_outcome(
                fields["status"], fields.get("error_kind", ""), bool(fields["content"])
            ),
            error_kind=fields.get("error_kind") or None,
            ttft_ms=round(fields["ttft_ms"]) if fields.get("ttft_ms") is not None else None,
            total_ms=round(fields["total_ms"]) if fields.get("total_ms") is not None else None,
            prompt_tokens=fields.get("prompt_tokens"),
            completion_tokens=fields.get("completion_tokens"),
            chars=len(fields["content"]),
        )
        final = fragments.MessageView(
            id=generation.answer_id,
            role=Message.Role.ASSISTANT,
            model=generation.turn.model,
            streamed=generation.turn.stream,
            buffered=generation.turn.answer.buffered,
            provider_name=generation.turn.answer.provider_name,
            is_latest=True,
            conversation_id=generation.turn.conversation_id,
            version_ids=generation.turn.answer.version_ids,
            **{k: v for k, v in fields.items() if k in _VIEW_FIELDS},
        )
        await self._publish(generation, fragments.final_frame(final), kind="final")


_VIEW_FIELDS = set(fragments.MessageView.__dataclass_fields__) - {"id", "role", "model", "streamed"}


# One service per event loop: the httpx pool and the tasks belong to the loop that made them.
_services: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GenerationService] = (
    weakref.WeakKeyDictionary()
)


def peek_service() -> GenerationService | None:
    """This loop's service if one was started (reading it must not open an HTTP pool)."""
    return _services.get(asyncio.get_running_loop())


def get_service() -> GenerationService:
    loop = asyncio.get_running_loop()
    service = _services.get(loop)
    if service is None:
        http = llm.make_http_client(
            connect_timeout=settings.LLM_CONNECT_TIMEOUT,
            read_timeout=settings.LLM_READ_TIMEOUT,
            max_connections=settings.LLM_MAX_CONNECTIONS,
        )
        service = _services[loop] = GenerationService(http)
        service.listen()
        _drain_before_shutdown(service)
    return service


def _drain_before_shutdown(service: GenerationService) -> None:
    """Under Daphne (Twisted's asyncio reactor), hold the process's exit on SIGTERM until the
    answers in flight are finished or saved (``STREAM_SHUTDOWN_GRACE_MS``)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return  # not served by Daphne (tests, management commands)
    from twisted.internet import defer, tcp

    def before_shutdown() -> defer.Deferred[None]:
        # Stop accepting connections first: a balancer (nginx) then sends new people to the
        # other workers while the sockets already open here see their answers finish.
        for reader in reactor.getReaders():
            if isinstance(reader, tcp.Port):
                reader.stopListening()
        drained = asyncio.ensure_future(service.drain(settings.STREAM_SHUTDOWN_GRACE))
        return defer.Deferred.fromFuture(drained)

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
