"""What every page of a conversation starts from: the owned conversation and the page's
context (the sidebar, the messages with their versions, the model picker)."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest
from django_htmx.middleware import HtmxDetails

from chat import heartbeats, images, providers
from chat.accounts import access
from chat.conversations import work
from chat.generation import registry
from chat.generation.records import is_orphan, shown_views
from chat.models import Conversation, Message
from chat.owners import Owner


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def owned_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    """The request's owner's conversation, or 404 (as for anything that is not theirs)."""
    conversation = Owner.from_request(request).conversation(conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def page_context(
    request: HttpRequest, conversation: Conversation | None, live: set[int] | None = None
) -> dict[str, object]:
    """The chat page; ``live`` are the answers this process is generating (read if not given).

    An answer another worker is generating counts as streaming too (its heartbeat is fresh):
    the page offers Stop for it, which reaches that worker.
    """
    owner = Owner.from_request(request)
    views = []
    streaming_answer_id = None
    if conversation is not None:
        # Shown versions only; whether a streaming one's worker died, judged by the database.
        shown = conversation.messages.filter(hidden=False).annotate(has_images=images.flag())
        rows = list(heartbeats.with_staleness(shown))
        if live is None:
            live = registry.running_in(conversation.pk)
        views = shown_views(conversation.pk, rows, latest=True)
        for row in rows:
            if row.status == Message.Status.STREAMING and not is_orphan(row, live):
                streaming_answer_id = row.pk
    return {
        "conversations": owner.chats().only("id", "title", "updated_at")[:200],
        "conversation": conversation,
        "chat_messages": views,
        "model_groups": providers.picker(
            providers.conversation_choice(conversation) if conversation else "",
            access.for_request(request).allows,
        ),
        "simulator": settings.LLM_SIMULATOR,
        "streaming_answer_id": streaming_answer_id,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "undo": work.take_undo(request),
    }
