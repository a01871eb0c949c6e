"""The base of both pages' websocket consumers: they route messages between one socket and
the services (``conversations.consumer``, ``compare.consumer``).

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

from chat.exceptions import ClientError
from chat.generation.service import GenerationService, get_service
from chat.live.follower import CLOSE_BEHIND, SYNC_LIMIT, Follower
from chat.live.protocol import SNAPSHOT_EVENT, session_group
from chat.live.socket import backlog_reader, close_with, server_send
from chat.owners import Owner
from chat.rendering import fragments
from chat.rendering.i18n import language_from_scope

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

    # The socket, as the follower sees it (``live.ports.Socket``) -----------------------------

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
        ids = {request_id(answer, "answer") for answer in answers}
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


def request_id(value: Any, name: str) -> int:
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
