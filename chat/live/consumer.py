"""The base of both pages' websocket consumers: they route messages between one socket and
the services (``conversations.consumer``, ``compare.consumer``).

They hold no chat logic and no delivery protocol: validate the htmx ``ws-send`` payload, call
a service, send what it returns. The socket's side of the live protocol (frame numbers, gaps,
snapshots, silence, a socket that cannot keep up) is its ``Follower`` (``live.follower``);
frames reach it from the hub (``live.hub``), not through this consumer's channel.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext

from chat.accounts.sessions import session_problem
from chat.exceptions import ClientError
from chat.generation.service import GenerationService, get_service
from chat.live.follower import CLOSE_BEHIND, SYNC_LIMIT, Follower
from chat.live.inbound import CLOSE_FLOOD, CLOSE_FLOOD_REASON, InboundLimit
from chat.live.protocol import (
    SNAPSHOT_EVENT,
    AccessEnded,
    AccessReason,
    session_group,
    user_group,
)
from chat.live.socket import backlog_reader, close_with, server_send
from chat.owners import MAX_ID, Owner
from chat.rendering import fragments
from chat.rendering.i18n import language_from_scope

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
# The login behind the socket ended (signed out, session deleted or expired, password
# changed, account deactivated): the page shows why and does not reconnect.
CLOSE_SIGNED_OUT = 4401
# The session's key was cycled, its login kept (a password change in that session): the page
# reconnects (htmx's ws extension does on 1012) and presents the new key.
CLOSE_RENEWED = 1012
CLOSE_REASONS: dict[AccessReason, str] = {
    "session": "session ended",
    "password": "password changed",
    "account": "account inactive",
}
# The longest message (32,000 characters of Chinese is 96 KB as UTF-8) fits with room to spare.
MAX_FRAME_BYTES = 256 * 1024


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
        # The login behind the socket (signed-in sockets only; see ``join_session_group``).
        self.session_key = ""
        self.user_id: int | str = ""
        self.session_group = ""
        self.user_group = ""
        self._session_check: asyncio.Task[None] | None = None
        self._access_ended = False
        self.inbound = InboundLimit()  # messages this socket may send (``live.inbound``)

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
            if self.follower is not None:
                self.follower.snapshot_arrived(message)  # type: ignore[arg-type]
            return
        if message["type"] == "websocket.receive" and not await self.admit_inbound():
            return  # refused before it costs anything
        if not self.language:  # the first message: websocket.connect
            await self.choose_language()
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        # As channels' own dispatch, without its ``aclose_old_connections`` first: a hop to the
        # one sync thread (behind whatever queues there) for every connect, message and close.
        # This consumer reaches the database only through ``database_sync_to_async``, which
        # closes stale connections in its thread before and after each call.
        await handler(message)

    async def admit_inbound(self) -> bool:
        """Runs for each message in, first: past the socket's rate, one alert, then silence,
        then a close (``live.inbound``)."""
        verdict = self.inbound.admit()
        if verdict == "alert":
            alert = gettext("Too many requests: wait a moment and try again.")
            await self.send(text_data=fragments.alert_frame(alert))
        elif verdict == "close":
            logger.warning("socket %s sent too many messages (%d refused): closing it",
                           self.channel_name, self.inbound.refused)  # fmt: skip
            if not close_with(self.base_send, CLOSE_FLOOD, CLOSE_FLOOD_REASON):
                await self.close(code=CLOSE_FLOOD, reason=CLOSE_FLOOD_REASON)
        return verdict == "accept"

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

    # The login behind the socket -------------------------------------------------------------

    async def join_session_group(self) -> None:
        """A signed-in socket listens for its session's end and its user's (``accounts``), and
        re-reads its session every ``STREAM_SESSION_CHECK`` for what no message said."""
        session = self.scope.get("session")
        user = self.scope.get("user")
        if session is None or not session.session_key or not user or not user.is_authenticated:
            return
        self.session_key, self.user_id = session.session_key, user.pk
        self.session_group = session_group(self.session_key)
        self.user_group = user_group(self.user_id)
        await self.channel_layer.group_add(self.session_group, self.channel_name)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        if settings.STREAM_SESSION_CHECK > 0:
            check = self._session_check = asyncio.create_task(self._check_session_periodically())
            # Ends with the consumer's own task, however that ends (disconnect cancels it too).
            consumer = asyncio.current_task()
            if consumer is not None:
                consumer.add_done_callback(lambda _: check.cancel())

    async def leave_session_group(self) -> None:
        if self._session_check is not None:
            self._session_check.cancel()
        for group in (self.session_group, self.user_group):
            if group:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def session_ended(self, event: dict[str, Any]) -> None:
        """Signed out (in this tab or another): say so and close; the page cannot reconnect."""
        await self.end_access(gettext("You have signed out."), "signed out")

    async def access_ended(self, event: AccessEnded) -> None:
        """The password changed, the account was deactivated or deleted, or the session row
        was deleted: say why and close. The session that changed its own password is spared
        (it is renewed instead)."""
        if event["keep"] and event["keep"] == self.session_group:
            return
        reason = event["reason"]
        await self.end_access(access_alert(reason), CLOSE_REASONS.get(reason, "session ended"))

    async def session_renewed(self, event: dict[str, Any]) -> None:
        """The session's key was cycled and its login kept: close with a code the page
        reconnects on, presenting the new key (the old one no longer exists)."""
        if self._access_ended:
            return
        self._access_ended = True
        if not close_with(self.base_send, CLOSE_RENEWED, "session renewed: reconnect"):
            await self.close(code=CLOSE_RENEWED)

    async def end_access(self, alert: str, reason: str) -> None:
        """Say why, then close with 4401 (once, whichever message or check comes first)."""
        if self._access_ended:
            return
        self._access_ended = True
        await self.send(text_data=fragments.alert_frame(alert))
        if not close_with(self.base_send, CLOSE_SIGNED_OUT, reason):
            await self.close(code=CLOSE_SIGNED_OUT)

    async def _check_session_periodically(self) -> None:
        """The backstop: every period (a little less, at random, so sockets opened together do
        not all ask at once) the session must still exist, its user be active and its password
        unchanged. A database that cannot answer closes nothing: the next check asks again."""
        period = settings.STREAM_SESSION_CHECK
        check = database_sync_to_async(session_problem)
        while not self._access_ended:
            await asyncio.sleep(period * random.uniform(0.8, 1.0))
            try:
                reason = await check(self.session_key, self.user_id)
            except Exception as exc:  # one line per socket: the outage itself is logged louder
                logger.info(
                    "socket %s: could not check its session: %s: %s",
                    self.channel_name,
                    type(exc).__name__,
                    exc,
                )
                continue
            if reason is not None:
                try:
                    await self.end_access(access_alert(reason), CLOSE_REASONS[reason])
                except Exception as exc:  # closed under us meanwhile: nothing left to close
                    logger.debug("socket %s is gone: %s", self.channel_name, exc)
                return

    async def disconnect(self, code: int) -> None:
        """On close: stop listening. Answers in flight go on and are saved."""
        if self.follower is not None:
            self.follower.close()
        await self.unfollow_all()
        await self.leave_session_group()


def access_alert(reason: AccessReason) -> str:
    """What a socket whose login ended says before it closes."""
    if reason == "password":
        return gettext("Your password was changed: sign in again.")
    if reason == "account":
        return gettext("This account is no longer active.")
    return gettext("Your session has ended: sign in again.")


def request_id(value: Any, name: str) -> int:
    """A positive database id (or count) from a request: anything else is refused clearly."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name})
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name}) from exc
    if not 0 < number <= MAX_ID:  # database keys: positive, within PostgreSQL's bigint
        raise ClientError(gettext("That request named no %(name)s.") % {"name": name})
    return number
