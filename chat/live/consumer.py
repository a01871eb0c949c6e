"""Websocket consumers: they route messages between one socket and the services.

They hold no chat logic and no delivery protocol: validate the htmx ``ws-send`` payload, call
a service, send what it returns. The socket's side of the live protocol (frame numbers, gaps,
snapshots, silence, a socket that cannot keep up) is its ``Follower`` (``live.follower``);
frames reach it from the hub (``live.hub``), not through this consumer's channel.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext

from . import comparisons, fragments
from .compare_views import render_figures, render_run
from .exceptions import ClientError
from .generation.service import GenerationService, get_service
from .generation.turns import get_conversation
from .i18n import language_from_scope
from .live.follower import CLOSE_BEHIND, SYNC_LIMIT, Follower
from .live.protocol import COMPARE_EVENT, SNAPSHOT_EVENT, comparison_group, session_group
from .live.socket import backlog_reader, close_with, server_send
from .models import ComparisonRun
from .owners import Owner

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
CLOSE_SIGNED_OUT = 4401
# The longest message (32,000 characters of Chinese is 96 KB as UTF-8) fits with room to spare.
MAX_FRAME_BYTES = 256 * 1024
# Ids are database keys: positive, and within PostgreSQL's bigint.
MAX_ID = (1 << 63) - 1


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """What both pages' sockets share: JSON in, alerts for bad requests, live frames out."""

    owner: Owner
    shows_chrome = False  # the chat page's Send/Stop button, title and alerts
    language = ""  # chosen from the handshake on connect (see ``choose_language``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.followed: list[int] = []  # conversations this socket shows
        self.follower: Follower | None = None
        self._raw_send: Any = None
        self._backlog: Any = None

    # The socket, as the follower sees it (``live.follower.Socket``) --------------------------

    async def send_text(self, html: str) -> None:
        if self._raw_send is None:
            await self.send(text_data=html)
            return
        try:
            await self._raw_send({"type": "websocket.send", "text": html})
        except Exception as exc:  # closed under us: its disconnect is on its way
            logger.debug("socket %s is gone: %s", self.channel_name, exc)

    def backlog(self) -> int:
        return self._backlog() if self._backlog is not None else 0

    async def close_behind(self) -> None:
        """Too far behind for too long: close; the page reconnects and catches up."""
        if not close_with(self.base_send, CLOSE_BEHIND, "too slow: reconnect"):
            await self.close(code=CLOSE_BEHIND, reason="too slow: reconnect")

    # Messages in -----------------------------------------------------------------------------

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
        """Runs for every message of this socket's channel (frames do not come this way)."""
        if message["type"] == SNAPSHOT_EVENT:
            # Skips channels' per-message database clean-up (a thread hop): no database here.
            if self.follower is not None:
                self.follower.snapshot_arrived(message)  # type: ignore[arg-type]
            return
        if not self.language:  # the first message: websocket.connect
            await self.choose_language()
        await super().dispatch(message)

    async def choose_language(self) -> None:
        """Runs once, before connect: this socket's language, chosen like a page's (the
        django_language cookie, the session, Accept-Language).

        Activated in the consumer's own task, which handles every message of this socket, so
        its alerts and logs are written in it (and so are the turns it asks for: an answer's
        frames are written once, in the language of the socket that asked).
        """
        self.language = await database_sync_to_async(language_from_scope)(self.scope)
        translation.activate(self.language)

    # Following conversations -------------------------------------------------------------

    def start_following(self, service: GenerationService) -> None:
        """Once accepted: frames go straight to the server's send, bounded by its backlog."""
        self._raw_send = server_send(self.base_send)
        self._backlog = backlog_reader(self.base_send)
        self.follower = Follower(
            self,
            service,
            chrome=self.shows_chrome,
            backlog_cap=settings.STREAM_SOCKET_BUFFER,
            behind_limit=settings.STREAM_BEHIND_LIMIT,
        )

    async def follow(self, conversation_ids: list[int]) -> None:
        """Show these conversations' answers live (and only these), catching up on any that
        already stream."""
        service = get_service()
        assert self.follower is not None
        await self.unfollow_all()
        self.followed = list(conversation_ids)
        for conversation_id in conversation_ids:
            await service.hub.follow(conversation_id, self.follower)
        for conversation_id in conversation_ids:
            await self.follower.catch_up(conversation_id)

    async def unfollow_all(self) -> None:
        if self.follower is None:
            return
        hub = get_service().hub
        for conversation_id in self.followed:
            await hub.unfollow(conversation_id, self.follower)
        self.followed = []

    async def sync(self, answers: Any) -> None:
        """After a reconnect the page names the answers it still shows as streaming."""
        if not isinstance(answers, list) or len(answers) > SYNC_LIMIT:
            raise ClientError(gettext("That request was not understood."))
        ids = {_id(answer, "answer") for answer in answers}
        assert self.follower is not None
        await self.follower.sync(self.followed, ids)

    # The sign-out group --------------------------------------------------------------------

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

    async def disconnect(self, code: int) -> None:
        """On close: stop listening. Answers in flight go on and are saved."""
        if self.follower is not None:
            self.follower.close()
        await self.unfollow_all()
        await self.leave_session_group()


class ChatConsumer(LiveConsumer):
    """One socket showing one conversation (``/ws/c/<id>/``)."""

    conversation_id: int
    shows_chrome = True

    async def connect(self) -> None:
        """On connect: check ownership, follow the conversation, catch up live answers."""
        owner = Owner.from_scope(self.scope)
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        if (
            owner is None
            or await database_sync_to_async(get_conversation)(owner, conversation_id) is None
        ):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.conversation_id = owner, conversation_id
        await self.join_session_group()
        await self.accept()
        self.start_following(get_service())
        await self.follow([conversation_id])

    async def handle(self, content: dict[str, Any]) -> None:
        """A new message, an edited one, Stop, Retry or sync."""
        action = content.get("action", "send")
        service = get_service()
        if action == "send":
            message = content.get("message")
            if not isinstance(message, str):
                raise ClientError(gettext("Type a message first."))
            await service.send(self.owner, self.conversation_id, message, self.channel_name)
        elif action == "stop":
            await service.stop(self.conversation_id, _id(content.get("answer"), "answer"))
        elif action == "retry":
            answer_id = _id(content.get("answer"), "answer")
            await service.retry(self.owner, self.conversation_id, answer_id, self.channel_name)
        elif action == "sync":
            await self.sync(content.get("answers"))
        elif action == "edit":
            message_id = _id(content.get("message"), "message")
            text = content.get("text")
            if not isinstance(text, str):
                raise ClientError(gettext("Type a message first."))
            await service.edit(self.owner, self.conversation_id, message_id, text)
        else:
            raise ClientError(gettext("That request was not understood."))


class CompareConsumer(LiveConsumer):
    """The comparison page's socket (``/ws/compare/`` or ``/ws/compare/<run id>/``).

    It follows one run at a time: the run's group and both sides' conversations. Message
    frames are the chat's own (the chat page's chrome is left out); timings come back from the
    browser and get the figures, the verdict and, at the end, the chart.
    """

    run_group = ""

    async def connect(self) -> None:
        owner = Owner.from_scope(self.scope)
        if owner is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner = owner
        run_id = self.scope["url_route"]["kwargs"].get("run_id")
        run = None
        if run_id is not None:
            run = await database_sync_to_async(comparisons.get_run)(owner, int(run_id))
            if run is None:
                await self.close(code=CLOSE_NOT_FOUND)
                return
        await self.join_session_group()
        await self.accept()
        self.start_following(get_service())
        if run is not None:
            await self._follow_run(run)

    async def disconnect(self, code: int) -> None:
        if self.run_group:
            await self.channel_layer.group_discard(self.run_group, self.channel_name)
        await super().disconnect(code)

    async def _follow_run(self, run: ComparisonRun) -> None:
        """Listen to this run (and stop listening to the previous one), catching up live text."""
        if self.run_group:
            await self.channel_layer.group_discard(self.run_group, self.channel_name)
        self.run_group = comparison_group(run.pk)
        await self.channel_layer.group_add(self.run_group, self.channel_name)
        await self.follow([run.stream_conversation_id, run.nostream_conversation_id])

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
        trials = _id(content.get("trials", 1), "trials")
        run = await database_sync_to_async(comparisons.create_run)(
            self.owner, prompt, model, trials
        )
        await self._follow_run(run)
        await self.send(text_data=await database_sync_to_async(render_run)(run, oob=True))
        comparisons.get_comparisons().launch(self.owner, run, self.channel_name)

    async def _timings(self, content: dict[str, Any]) -> None:
        run_id, trial = _id(content.get("run"), "run"), _id(content.get("trial"), "trial")
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
        if message["type"] == COMPARE_EVENT:
            await self.send(text_data=message["html"])
        else:
            await super().dispatch(message)


def _id(value: Any, name: str) -> int:
    """A positive database id (or count) from a request: anything else is refused clearly."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name})
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name}) from exc
    if not 0 < number <= MAX_ID:
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name})
    return number


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
