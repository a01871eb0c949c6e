"""The chat page's socket (``/ws/c/<id>/``): sends, edits, Stop, Retry and sync, routed to the
generation service; the conversation's live answers come through the base's follower."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.utils.translation import gettext

from chat import images
from chat.exceptions import ClientError
from chat.generation.service import get_service
from chat.live.consumer import CLOSE_NOT_FOUND, LiveConsumer, request_id
from chat.owners import Owner


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
            or await database_sync_to_async(owner.conversation)(conversation_id) is None
        ):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.conversation_id = owner, conversation_id
        await self.join_session_group()
        await self.accept()
        self.start_following(get_service())
        await self.follow([conversation_id])

    async def handle(self, content: dict[str, Any]) -> None:
        """A new message, an edited one, Stop, Retry, Continue or sync."""
        action = content.get("action", "send")
        service = get_service()
        if action == "send":
            message = content.get("message")
            if not isinstance(message, str):
                raise ClientError(gettext("Type a message first."))
            image_ids = images.parse_ids(content.get("images"))
            await service.send(
                self.owner, self.conversation_id, message, self.channel_name, image_ids
            )
        elif action == "stop":
            await service.stop(self.conversation_id, request_id(content.get("answer"), "answer"))
        elif action == "retry":
            answer_id = request_id(content.get("answer"), "answer")
            await service.retry(self.owner, self.conversation_id, answer_id, self.channel_name)
        elif action == "continue":
            answer_id = request_id(content.get("answer"), "answer")
            await service.continue_answer(self.owner, self.conversation_id, answer_id)
        elif action == "sync":
            await self.sync(content.get("answers"))
        elif action == "edit":
            message_id = request_id(content.get("message"), "message")
            text = content.get("text")
            if not isinstance(text, str):
                raise ClientError(gettext("Type a message first."))
            await service.edit(self.owner, self.conversation_id, message_id, text)
        else:
            raise ClientError(gettext("That request was not understood."))
