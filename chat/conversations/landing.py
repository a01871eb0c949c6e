"""The landing page's message box: the first message of a chat typed before the chat exists.

Sending still happens over the conversation's socket, like any other message, so the answer
streams and is saved the usual way. The landing's POST only creates the conversation and keeps
the text (and the ids of the images attached to it) in the session; the conversation page
takes it out as it renders it (once: a reload or Back finds nothing), its images as chips in
the composer, and the page's script sends it as soon as the socket opens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from chat import images

# The one rule (and wording) for a message's text, shared with a send over the socket.
from chat.generation import turns
from chat.owners import Owner
from chat.rendering.fragments import ImageView

PENDING_SESSION_KEY = "streamside_landing_message"
# A message whose page never rendered (the redirect was lost, say) is dropped after this
# rather than sent out of the blue on some later visit to that conversation.
PENDING_FOR_S = 300.0


def message_text(raw: str) -> str:
    """The posted text as the socket will get it, or ``ClientError`` ("Type a message first.",
    "That message is too long …"): checked here so a refused message creates nothing."""
    # A form posts a textarea's line breaks as CRLF; the socket gets them as the box holds them.
    return turns.message_text(raw.replace("\r\n", "\n"))


@dataclass(frozen=True, slots=True)
class Pending:
    """The first message waiting to be sent in its new chat: its text and its images' ids."""

    text: str
    images: tuple[uuid.UUID, ...] = ()


def image_ids(owner: Owner, raw: Sequence[str]) -> list[uuid.UUID]:
    """The posted chips' ids, refused as a send over the socket refuses them (someone else's,
    already sent or removed, too many): checked here so a refused message creates nothing."""
    ids = images.parse_ids(list(raw))
    images.check_unsent(owner, ids)
    return ids


def chips_kept(owner: Owner, raw: Sequence[str]) -> tuple[ImageView, ...]:
    """After a refusal, the posted chips that are still the owner's to send: they stay in the
    box with the text, so fixing the text does not mean attaching the images again."""
    ids: list[uuid.UUID] = []
    for item in raw:
        try:
            ids.append(uuid.UUID(item))
        except ValueError:
            continue
    return images.unsent_views(owner, list(dict.fromkeys(ids))[: settings.CHAT_IMAGE_MAX_COUNT])


def keep(
    request: HttpRequest, conversation_id: int, text: str, image_ids: Sequence[uuid.UUID] = ()
) -> None:
    """After the landing's POST: the conversation's next whole page sends ``text`` (with its
    images), once."""
    request.session[PENDING_SESSION_KEY] = {
        "conversation": conversation_id,
        "text": text,
        "images": [str(image_id) for image_id in image_ids],
        "at": time.time(),
    }


def take(request: HttpRequest, conversation_id: int) -> Pending | None:
    """The message waiting to be sent in this conversation (None if none), removed from the
    session as the page renders it; a message kept for another conversation stays for that one."""
    if getattr(request, "htmx", False):
        return None
    pending = request.session.get(PENDING_SESSION_KEY)
    if not isinstance(pending, dict) or pending.get("conversation") != conversation_id:
        return None
    del request.session[PENDING_SESSION_KEY]
    text, at = pending.get("text"), pending.get("at")
    if not isinstance(text, str) or not isinstance(at, float) or time.time() - at > PENDING_FOR_S:
        return None
    try:
        ids = tuple(uuid.UUID(str(image_id)) for image_id in pending.get("images") or ())
    except (TypeError, ValueError):
        return None
    return Pending(text, ids) if text else None
