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
from django.utils import timezone

from . import fragments, llm, providers, usage
from .exceptions import ClientError
from .markdown import BlockSplitter
from .models import Conversation, Message, conversation_group
from .owners import Owner

logger = logging.getLogger(__name__)

FRAME_EVENT = "chat.frame"
# Every worker's service listens in this group, for requests about answers it runs.
WORKERS_GROUP = "streamside-workers"
STOP_EVENT = "generation.stop"
SNAPSHOT_REQUEST = "generation.snapshot"
SNAPSHOT_EVENT = "chat.snapshot"  # the reply, to one socket's channel
GROUP_REFRESH = 3600.0  # seconds; channels-redis forgets group members after a day
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
            f"The model “{conversation.model}” is no longer offered by {upstream.name}: "
            "pick another model."
        )
    problem = upstream.missing_key()
    if problem:
        raise ClientError(problem)
    return upstream


def _history(conversation: Conversation) -> list[Message]:
    """The conversation's messages in order: read once per turn, for every check and context."""
    return list(
        conversation.messages.only("id", "role", "content", "status", "created_at", "heartbeat_at")
    )


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


def _settle(pks: list[int]) -> None:
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
        _settle(orphans)


def _check_idle(rows: list[Message], live: set[int]) -> None:
    """Refuse a second answer while one streams; settle the ones a dead worker left."""
    streaming = [row for row in rows if row.status == Message.Status.STREAMING]
    orphans = [row for row in streaming if is_orphan(row, live)]
    if orphans:
        _settle([row.pk for row in orphans])
        for row in orphans:
            row.status = Message.Status.ERROR
    if len(orphans) < len(streaming):
        raise ClientError("An answer is still streaming: stop it or wait for it to finish.")


def _count_request(conversation: Conversation, *, rate_checked: bool = False) -> None:
    """A request counts toward its user's day (refused past the token limit), and is refused
    past the per-minute rate limit unless its caller checked that already."""
    if not rate_checked:
        usage.check_rate(conversation.user_id, conversation.session_key)
    if conversation.user_id is not None:
        usage.check_allowance(conversation.user_id)
        usage.count_request(conversation.user_id)


def _new_answer(conversation: Conversation, upstream: providers.Upstream) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        provider_name=upstream.name,
        streamed=conversation.stream,
        heartbeat_at=timezone.now(),
    )


def _owned(owner: Owner, conversation_id: int) -> Conversation:
    conversation = get_conversation(owner, conversation_id)
    if conversation is None:
        raise ClientError("This conversation no longer exists.")
    return conversation


def create_turn(
    owner: Owner, conversation_id: int, text: str, live: set[int], *, standalone: bool = False
) -> Turn:
    """Save the user's message (before anything is sent upstream) and an empty answer.

    ``standalone`` sends the message without the conversation's earlier turns (each trial of
    a comparison is the same single question, not a follow-up).
    """
    text = text.strip()
    if not text:
        raise ClientError("Type a message first.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ClientError(
            f"That message is too long ({len(text):,} characters; at most {limit:,})."
        )
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


def create_retry(owner: Owner, conversation_id: int, answer_id: int, live: set[int]) -> Turn:
    """A fresh answer to the same question; the failed or stopped one stays in the history."""
    with transaction.atomic():
        conversation = _owned(owner, conversation_id)
        upstream = _upstream(conversation)
        rows = _history(conversation)
        _check_idle(rows, live)
        latest = rows[-1] if rows else None
        if latest is None or latest.pk != answer_id or latest.role != Message.Role.ASSISTANT:
            raise ClientError("Only the latest answer can be retried.")
        _count_request(conversation)
        answer = _new_answer(conversation, upstream)
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=_context(conversation, rows[:-1]),
        answer=fragments.message_view(answer, is_latest=True),
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        stale_retry=latest.pk,
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
        _settle([message.pk])
        message.refresh_from_db()
    return fragments.message_view(message, is_latest=True)


def saved_log(conversation_id: int, *, with_retry: bool) -> str:
    """The conversation's messages as saved, for a socket that missed an answer's first frame."""
    rows = list(Message.objects.filter(conversation_id=conversation_id).order_by("pk"))
    views = [
        fragments.message_view(row, is_latest=with_retry and index == len(rows) - 1)
        for index, row in enumerate(rows)
    ]
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
    stop_requested: bool = False
    done: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def answer_id(self) -> int:
        return self.turn.answer.id

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
        )

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
                "Stop could not reach the server running that answer: try again."
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
            if kind == STOP_EVENT:
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
            },
        )

    async def _send_snapshot(self, request: Mapping[str, Any]) -> None:
        generation = self.running.get(int(request["answer"]))
        if generation is None or generation.turn.conversation_id != int(request["conversation"]):
            return  # not ours (or already finished: its final frame went to the group)
        # No await between reading the view and its seq: the snapshot holds frames 1..seq.
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

    def _refuse_while_closing(self) -> None:
        if self.closing:
            raise ClientError("The server is restarting: send that again in a moment.")

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
        frame = fragments.turn_frame(
            turn.conversation_id,
            turn.user,
            turn.answer,
            stale_retry=turn.stale_retry,
            new_title=turn.new_title,
        )
        await self._publish(generation, frame, kind="turn")
        return generation

    def _launch(self, generation: Generation) -> None:
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
        publisher = asyncio.create_task(self._publish_loop(generation))
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

    async def _publish_loop(self, generation: Generation) -> None:
        """Send coalesced deltas; at the end save the answer, then send the final frame."""
        sent_first = sent_reasoning = sent_text = False
        while True:
            await generation.wake.wait()
            generation.wake.clear()
            # Read before draining: text that lands after this is still flushed next round.
            finished = generation.done
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
        final = fragments.MessageView(
            id=generation.answer_id,
            role=Message.Role.ASSISTANT,
            model=generation.turn.model,
            streamed=generation.turn.stream,
            buffered=generation.turn.answer.buffered,
            provider_name=generation.turn.answer.provider_name,
            is_latest=True,
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
    from twisted.internet import defer

    def before_shutdown() -> defer.Deferred[None]:
        drained = asyncio.ensure_future(service.drain(settings.STREAM_SHUTDOWN_GRACE))
        return defer.Deferred.fromFuture(drained)

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
