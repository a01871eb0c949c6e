"""Who owns a conversation: the logged-in user, or else the browser session (the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest

from chat.models import Conversation
from chat.prepared import Marker, PreparedQuery

MAX_ID = (1 << 63) - 1
"""The largest id a row can have (a signed 64-bit integer)."""


@dataclass(frozen=True, slots=True)
class Owner:
    user_id: int | None
    session_key: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> Owner:
        """Owner of an HTTP request; gives an anonymous visitor a session so they can own things."""
        if request.user.is_authenticated:
            return cls(user_id=request.user.pk, session_key="")
        if not request.session.session_key:
            request.session.save()
        return cls(user_id=None, session_key=request.session.session_key or "")

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Owner | None:
        """Owner of a websocket (AuthMiddlewareStack filled user and session); None if unknown,
        or if the deployment requires a login and the socket has none."""
        user = scope.get("user")
        if user is not None and user.is_authenticated:
            return cls(user_id=user.pk, session_key="")
        if settings.CHAT_REQUIRE_LOGIN:
            return None
        session = scope.get("session")
        key = session.session_key if session is not None else None
        return cls(user_id=None, session_key=key) if key else None

    def conversations(self) -> QuerySet[Conversation]:
        """The owner's conversations; deleted ones (restorable until purged) are left out."""
        return self.with_deleted().filter(deleted_at__isnull=True)

    def conversation(self, conversation_id: int) -> Conversation | None:
        """One of the owner's conversations (not deleted), or None: never someone else's.

        Asked by every socket as it opens and by most views: a query compiled once
        (``chat.prepared``; building and compiling it was most of a socket's opening cost)."""
        if not 0 < conversation_id <= MAX_ID:  # the database's integers end there
            return None
        found = _CONVERSATION.run(
            self.user_id is not None,
            pk=conversation_id,
            user_id=self.user_id,
            session_key=self.session_key,
        )
        return found[0] if found else None

    def with_deleted(self) -> QuerySet[Conversation]:
        """Every conversation of the owner's, deleted ones too (for Undo and the purge)."""
        if self.user_id is not None:
            return Conversation.objects.filter(user_id=self.user_id)
        return Conversation.objects.filter(user__isnull=True, session_key=self.session_key)

    def chats(self) -> QuerySet[Conversation]:
        """Conversations for the sidebar: comparison panes are listed under /compare/ instead."""
        return self.conversations().filter(purpose=Conversation.Purpose.CHAT)

    def new_conversation_fields(self) -> dict[str, Any]:
        if self.user_id is not None:
            return {"user_id": self.user_id}
        return {"session_key": self.session_key}


def _conversation_query(marker: Marker, by_user: bool) -> QuerySet[Conversation]:
    """``Owner.conversation``'s query, for a user's conversation or a session's."""
    if by_user:
        rows = Conversation.objects.filter(user_id=marker.number("user_id"))
    else:
        session_key = marker.text("session_key")
        rows = Conversation.objects.filter(user__isnull=True, session_key=session_key)
    return rows.filter(pk=marker.number("pk"), deleted_at__isnull=True).order_by()


_CONVERSATION = PreparedQuery(_conversation_query)
