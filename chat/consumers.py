"""Websocket consumers: they route messages between one socket and the services.

They hold no chat logic: validate the htmx ``ws-send`` payload, call a service, forward the
service's frames (ready HTML) to the browser. Generations run as service tasks, so a Stop is
never queued behind a long answer and closing the socket does not stop an answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import translation
from django.utils.translation import gettext

from . import comparisons, fragments
from .compare_views import render_figures, render_run
from .exceptions import ClientError
from .i18n import language_from_scope
from .models import ComparisonRun, Message, conversation_group, session_group
from .owners import Owner
from .services import (
    FRAME_EVENT,
    SNAPSHOT_EVENT,
    Generation,
    ended_answers,
    get_conversation,
    get_service,
    saved_answer,
    saved_log,
    streaming_answers,
)

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
CLOSE_SIGNED_OUT = 4401
# The longest message (32,000 characters of Chinese is 96 KB as UTF-8) fits with room to spare.
MAX_FRAME_BYTES = 256 * 1024
# How long a socket holds another worker's frames waiting for that worker's snapshot, and how
# often it asks: a request published while that worker's Redis connection is still coming back
# is lost, and a second one a moment later is not.
SNAPSHOT_WAIT = 2.0
SNAPSHOT_ATTEMPTS = 3
# How long an answer shown as streaming may go without a frame before the database is asked
# whether it ended (its final frame lost) or its worker died. A slow upstream costs one query.
SILENCE_CHECK = 5.0
SYNC_LIMIT = 50  # answers a page may ask about after a reconnect


class FrameConsumer(AsyncJsonWebsocketConsumer):
    """What both pages' sockets share: JSON in, alerts for bad requests, frames out.

    The channel layer delivers at most once (channels-redis drops to a full channel; frames
    published while Redis restarts are gone), so the socket checks each answer's frame numbers:
    a gap is refilled from a snapshot of the answer so far (from the worker generating it) and,
    when an answer falls silent, the database says whether it ended.
    """

    owner: Owner
    seen: dict[int, int]  # answer id -> the last frame seq this socket has shown
    shows_chrome = False  # the chat page's Send/Stop button, title and alerts
    language = ""  # chosen from the handshake on connect (see ``choose_language``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[int, list[dict[str, Any]]] = {}  # answer id -> frames held
        self.live: dict[int, float] = {}  # answer shown streaming -> when it last had news
        self.timers: list[asyncio.Task[None]] = []
        self.watcher: asyncio.Task[None] | None = None

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Runs for each ws-send; a refused request gets an alert and the socket stays open."""
        try:
            if text_data is None:
                raise ClientError(gettext("Binary messages are not accepted."))
            if len(text_data) > MAX_FRAME_BYTES // 4 and len(text_data.encode()) > MAX_FRAME_BYTES:
                raise ClientError(gettext("That request is too large."))
            try:
                content = await self.decode_json(text_data)
            except ValueError as exc:
                raise ClientError(gettext("That request was not valid JSON.")) from exc
            if not isinstance(content, dict):
                raise ClientError(gettext("That request was not understood."))
            await self.handle(content)
        except ClientError as error:
            await self.send(text_data=fragments.alert_frame(error.message))

    async def handle(self, content: dict[str, Any]) -> None:
        raise NotImplementedError

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Runs for every message; frames skip channels' per-message database clean-up.

        ``AsyncConsumer.dispatch`` calls ``close_old_connections`` in the sync thread before
        each handler: a thread hop per frame per socket, for a handler that touches no database.
        """
        if message["type"] == FRAME_EVENT:
            await self.chat_frame(message)
        elif message["type"] == SNAPSHOT_EVENT:
            await self.chat_snapshot(message)
        else:
            if not self.language:  # the first message: websocket.connect
                await self.choose_language()
            await super().dispatch(message)

    async def choose_language(self) -> None:
        """Runs once, before connect: this socket's language, chosen like a page's (the
        django_language cookie, the session, Accept-Language).

        Activated in the consumer's own task, which handles every message of this socket, so
        its alerts, snapshots and logs are written in it (and so are the turns it asks for:
        an answer's frames are written once, in the language of the socket that asked). Once,
        not per message: forwarding a frame renders nothing and should stay that cheap.
        """
        self.language = await database_sync_to_async(language_from_scope)(self.scope)
        translation.activate(self.language)

    async def join_session_group(self) -> None:
        """A signed-in socket listens for its session's end (see ``accounts``)."""
        session = self.scope.get("session")
        user = self.scope.get("user")
        if session is not None and session.session_key and user and user.is_authenticated:
            self.session_group = session_group(session.session_key)
            await self.channel_layer.group_add(self.session_group, self.channel_name)

    async def leave_session_group(self) -> None:
        if getattr(self, "session_group", None):
            await self.channel_layer.group_discard(self.session_group, self.channel_name)

    async def session_ended(self, event: dict[str, Any]) -> None:
        """Signed out (in this tab or another): say so and close; the page cannot reconnect."""
        await self.send(text_data=fragments.alert_frame(gettext("You have signed out.")))
        await self.close(code=CLOSE_SIGNED_OUT)

    def stop_watching(self) -> None:
        for task in [*self.timers, self.watcher]:
            if task is not None:
                task.cancel()

    async def chat_frame(self, event: dict[str, Any]) -> None:
        """A generation's frame, for every socket in the conversation's group."""
        answer_id, seq = event["answer"], event["seq"]
        held = self.pending.get(answer_id)
        if held is not None:
            if event["kind"] != "final":
                held.append(event)  # until the snapshot it follows arrives
                return
            del self.pending[answer_id]  # the final frame holds the whole answer: no wait
        last = self.seen.get(answer_id, 0)
        if seq <= last:
            return  # already contained in a snapshot this socket got
        if seq > last + 1 and event["kind"] != "final":
            await self._refill(event, missed_start=last == 0)
            return
        if seq > last + 1 and last == 0:
            await self._send_log(event["conversation"])  # the final frame needs its article
        self.seen[answer_id] = seq
        self._note(answer_id, ended=event["kind"] == "final")
        await self.send(text_data=self.frame_html(event))

    async def _refill(self, event: dict[str, Any], *, missed_start: bool) -> None:
        """Frames went missing: show the answer so far, then only the frames after it."""
        answer_id, conversation_id = event["answer"], event["conversation"]
        logger.info("socket %s missed frames of answer %d: refilling", self.channel_name, answer_id)
        if missed_start:
            await self._send_log(conversation_id)
        generation = get_service().running.get(answer_id)
        if generation is not None:  # generated here: its text so far, right now
            await self._send_local_snapshot(generation)
            await self.chat_frame(event)
        else:
            await self._ask_snapshot(conversation_id, answer_id, held=[event])

    async def _send_log(self, conversation_id: int) -> None:
        html = await database_sync_to_async(saved_log)(
            conversation_id, with_retry=self.shows_chrome
        )
        await self.send(text_data=html)

    async def _send_local_snapshot(self, generation: Generation) -> None:
        # No await between reading the text and its seq: the snapshot holds frames 1..seq.
        self.seen[generation.answer_id] = generation.seq
        frame = fragments.snapshot_frame(generation.live_view())
        self._note(generation.answer_id, ended=False)
        await self.send(text_data=self._with_chrome(frame.body, frame.chrome))

    async def chat_snapshot(self, event: dict[str, Any]) -> None:
        """Another worker's answer so far (asked for on connect), then the frames held since."""
        answer_id = event["answer"]
        held = self.pending.pop(answer_id, None)
        if held is None:
            return  # the deadline came first
        self.seen[answer_id] = event["seq"]
        self._note(answer_id, ended=False)
        await self.send(text_data=self._with_chrome(event["html"], event["chrome"]))
        for frame in held:
            await self.chat_frame(frame)

    def _with_chrome(self, body: str, chrome: str) -> str:
        return body + chrome if self.shows_chrome else body

    async def _ask_snapshot(
        self, conversation_id: int, answer_id: int, held: list[dict[str, Any]]
    ) -> None:
        """An answer another worker generates: ask it for the text so far, holding its frames
        meanwhile, so nothing is lost or doubled however the two race."""
        self.pending[answer_id] = held
        await self._request_snapshot(conversation_id, answer_id)
        self.timers.append(asyncio.create_task(self._snapshot_deadline(conversation_id, answer_id)))

    async def _request_snapshot(self, conversation_id: int, answer_id: int) -> None:
        try:
            await get_service().request_snapshot(conversation_id, answer_id, self.channel_name)
        except Exception as exc:  # the layer is down: the deadline asks again, then falls back
            logger.warning("could not ask for a snapshot of answer %d: %s", answer_id, exc)

    async def _snapshot_deadline(self, conversation_id: int, answer_id: int) -> None:
        """No snapshot came yet. If the answer ended meanwhile, show its saved state; if it
        still streams, ask again (a request lost to a reconnecting layer), and after the last
        attempt show the frames held (the final frame mends the gap); silence is watched after.
        """
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            await asyncio.sleep(SNAPSHOT_WAIT)
            if answer_id not in self.pending:
                return  # the snapshot (or the final frame) came
            view = await database_sync_to_async(saved_answer)(answer_id)
            if answer_id not in self.pending:
                return  # it came while the database answered
            if view is not None and view.status != Message.Status.STREAMING:
                del self.pending[answer_id]
                await self._send_final(view)
                return
            if view is None or attempt == SNAPSHOT_ATTEMPTS:
                break
            logger.info("no snapshot of answer %d yet: asking again", answer_id)
            await self._request_snapshot(conversation_id, answer_id)
        held = self.pending.pop(answer_id, None)
        if held is None:
            return
        self._note(answer_id, ended=False)
        for frame in held:
            self.seen[answer_id] = frame["seq"] - 1  # best effort: the final frame mends all
            await self.chat_frame(frame)

    async def _send_final(self, view: fragments.MessageView) -> None:
        self.seen[view.id] = 1 << 62  # nothing after the end
        self._note(view.id, ended=True)
        final = fragments.final_frame(view)
        await self.send(text_data=self._with_chrome(final.body, final.chrome))

    def _note(self, answer_id: int, *, ended: bool) -> None:
        """Keep the time of each shown answer's last news; silence gets a database check."""
        if ended:
            self.live.pop(answer_id, None)
            return
        self.live[answer_id] = time.monotonic()
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.create_task(self._watch_silence())

    async def _watch_silence(self) -> None:
        """An answer with no frame for ``SILENCE_CHECK`` seconds: lost final frame, or a dead
        worker? The database knows; a live answer merely thinking is left alone."""
        while self.live:
            await asyncio.sleep(SILENCE_CHECK / 2)
            now = time.monotonic()
            quiet = [
                answer_id
                for answer_id, heard in self.live.items()
                if now - heard >= SILENCE_CHECK and answer_id not in self.pending
            ]
            for answer_id in quiet:
                running = set(get_service().running)
                view = await database_sync_to_async(saved_answer)(answer_id, running)
                if view is None:
                    self.live.pop(answer_id, None)
                elif view.status != Message.Status.STREAMING:
                    if answer_id in self.live:  # no final frame arrived meanwhile
                        await self._send_final(view)
                elif answer_id in self.live:
                    self.live[answer_id] = now

    def frame_html(self, event: dict[str, Any]) -> str:
        return str(event["html"])

    async def sync(self, answers: Any) -> None:
        """After a reconnect the page names the answers it still shows as streaming; those that
        ended meanwhile (their final frame went to the old socket) get their final frame now.
        Those still streaming were caught up on connect."""
        if not isinstance(answers, list) or len(answers) > SYNC_LIMIT:
            raise ClientError(gettext("That request was not understood."))
        ids = {_int(answer, "answer") for answer in answers}
        for view in await database_sync_to_async(ended_answers)(self.conversation_ids(), ids):
            if view.id not in self.live and view.id not in self.pending:
                await self._send_final(view)

    def conversation_ids(self) -> list[int]:
        """The conversations this socket shows."""
        raise NotImplementedError

    async def catch_up(self, conversation_id: int) -> None:
        """Answers already streaming, here or on another worker: their text so far, then only
        later frames.

        Called after joining the group, so a frame newer than the snapshot still arrives.
        """
        local: set[int] = set()
        for generation in get_service().snapshots(conversation_id):
            local.add(generation.answer_id)
            await self._send_local_snapshot(generation)
        for answer_id in await database_sync_to_async(streaming_answers)(conversation_id, local):
            await self._ask_snapshot(conversation_id, answer_id, held=[])


class ChatConsumer(FrameConsumer):
    """One socket showing one conversation (``/ws/c/<id>/``)."""

    conversation_id: int
    shows_chrome = True

    async def connect(self) -> None:
        """On connect: check ownership, join the conversation's group, catch up live answers."""
        owner = Owner.from_scope(self.scope)
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        if (
            owner is None
            or await database_sync_to_async(get_conversation)(owner, conversation_id) is None
        ):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.conversation_id, self.seen = owner, conversation_id, {}
        await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
        await self.join_session_group()
        await self.accept()
        await self.catch_up(conversation_id)

    async def disconnect(self, code: int) -> None:
        """On close: stop listening. Answers in flight go on and are saved."""
        self.stop_watching()
        await self.leave_session_group()
        if hasattr(self, "conversation_id"):
            await self.channel_layer.group_discard(
                conversation_group(self.conversation_id), self.channel_name
            )

    async def handle(self, content: dict[str, Any]) -> None:
        """A new message, an edited one, Stop or Retry."""
        action = content.get("action", "send")
        service = get_service()
        if action == "send":
            message = content.get("message")
            if not isinstance(message, str):
                raise ClientError(gettext("Type a message first."))
            await service.send(self.owner, self.conversation_id, message, self.channel_name)
        elif action == "stop":
            await service.stop(self.conversation_id, _int(content.get("answer"), "answer"))
        elif action == "retry":
            answer_id = _int(content.get("answer"), "answer")
            await service.retry(self.owner, self.conversation_id, answer_id, self.channel_name)
        elif action == "sync":
            await self.sync(content.get("answers"))
        elif action == "edit":
            message_id = _int(content.get("message"), "message")
            text = content.get("text")
            if not isinstance(text, str):
                raise ClientError(gettext("Type a message first."))
            await service.edit(self.owner, self.conversation_id, message_id, text)
        else:
            raise ClientError(gettext("That request was not understood."))

    def conversation_ids(self) -> list[int]:
        return [self.conversation_id]

    def frame_html(self, event: dict[str, Any]) -> str:
        html = event["html"] + event["chrome"]
        if event["kind"] == "turn" and event.get("origin") == self.channel_name:
            html += fragments.SENT_MARKER
        return str(html)


class CompareConsumer(FrameConsumer):
    """The comparison page's socket (``/ws/compare/`` or ``/ws/compare/<run id>/``).

    It follows one run at a time: the run's group and both sides' conversation groups. Message
    frames are the chat's own (the chat page's chrome is left out); timings come back from the
    browser and get the figures, the verdict and, at the end, the chart.
    """

    groups_joined: list[str]
    sides: list[int]  # the followed run's two conversations

    async def connect(self) -> None:
        owner = Owner.from_scope(self.scope)
        if owner is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.groups_joined, self.seen, self.sides = owner, [], {}, []
        run_id = self.scope["url_route"]["kwargs"].get("run_id")
        run = None
        if run_id is not None:
            run = await database_sync_to_async(comparisons.get_run)(owner, int(run_id))
            if run is None:
                await self.close(code=CLOSE_NOT_FOUND)
                return
        await self.join_session_group()
        await self.accept()
        if run is not None:
            await self._follow(run)

    def conversation_ids(self) -> list[int]:
        return list(self.sides)

    async def disconnect(self, code: int) -> None:
        self.stop_watching()
        await self.leave_session_group()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _follow(self, run: ComparisonRun) -> None:
        """Listen to this run (and stop listening to the previous one), catching up live text."""
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        sides = [run.stream_conversation_id, run.nostream_conversation_id]
        self.sides = sides
        self.groups_joined = [comparisons.comparison_group(run.pk)]
        self.groups_joined += [conversation_group(pk) for pk in sides]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        for conversation_id in sides:
            await self.catch_up(conversation_id)

    async def handle(self, content: dict[str, Any]) -> None:
        action = content.get("action")
        if action == "run":
            await self._run(content)
        elif action == "timings":
            await self._timings(content)
        elif action == "sync":
            await self.sync(content.get("answers"))
        else:
            raise ClientError(gettext("That request was not understood."))

    async def _run(self, content: dict[str, Any]) -> None:
        prompt, model = content.get("prompt"), content.get("model")
        if not isinstance(prompt, str) or not isinstance(model, str):
            raise ClientError(gettext("Type a prompt first."))
        trials = _int(content.get("trials", 1), "trials")
        run = await database_sync_to_async(comparisons.create_run)(
            self.owner, prompt, model, trials
        )
        await self._follow(run)
        await self.send(text_data=await database_sync_to_async(render_run)(run, oob=True))
        comparisons.get_comparisons().launch(self.owner, run, self.channel_name)

    async def _timings(self, content: dict[str, Any]) -> None:
        run_id, trial = _int(content.get("run"), "run"), _int(content.get("trial"), "trial")
        mode = content.get("mode")
        if mode not in comparisons.MODES:
            raise ClientError(gettext("That request was not understood."))
        await database_sync_to_async(comparisons.save_browser_timings)(
            self.owner,
            run_id,
            trial,
            str(mode),
            _milliseconds(content.get("first_text_ms")),
            _milliseconds(content.get("complete_ms")),
        )
        html = await database_sync_to_async(render_figures)(self.owner, run_id)
        await self.send(text_data=html)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == comparisons.COMPARE_EVENT:
            await self.send(text_data=message["html"])
        else:
            await super().dispatch(message)


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name}) from exc


def _milliseconds(value: Any) -> float | None:
    """A browser-measured duration: empty for "never happened", else 0 to one hour."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(gettext("That timing was not a number.")) from exc
    if not 0 <= number <= 3_600_000:
        raise ClientError(gettext("That timing was out of range."))
    return number
