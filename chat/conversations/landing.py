"""The landing page's message box: the first message of a chat typed before the chat exists.

Sending still happens over the conversation's socket, like any other message, so the answer
streams and is saved the usual way. The landing's POST only creates the conversation and keeps
the text in the session; the conversation page takes it out as it renders it (once: a reload or
Back finds nothing), and the page's script sends it as soon as the socket opens.
"""

from __future__ import annotations

import time

from django.http import HttpRequest

# The one rule (and wording) for a message's text, shared with a send over the socket.
from chat.generation import turns

PENDING_SESSION_KEY = "streamside_landing_message"
# A message whose page never rendered (the redirect was lost, say) is dropped after this
# rather than sent out of the blue on some later visit to that conversation.
PENDING_FOR_S = 300.0


def message_text(raw: str) -> str:
    """The posted text as the socket will get it, or ``ClientError`` ("Type a message first.",
    "That message is too long …"): checked here so a refused message creates nothing."""
    # A form posts a textarea's line breaks as CRLF; the socket gets them as the box holds them.
    return turns.message_text(raw.replace("\r\n", "\n"))


def keep(request: HttpRequest, conversation_id: int, text: str) -> None:
    """After the landing's POST: the conversation's next whole page sends ``text``, once."""
    request.session[PENDING_SESSION_KEY] = {
        "conversation": conversation_id,
        "text": text,
        "at": time.time(),
    }


def take(request: HttpRequest, conversation_id: int) -> str:
    """The text waiting to be sent in this conversation ("" if none), removed from the session
    as the page renders it; a message kept for another conversation stays for that one."""
    if getattr(request, "htmx", False):
        return ""
    pending = request.session.get(PENDING_SESSION_KEY)
    if not isinstance(pending, dict) or pending.get("conversation") != conversation_id:
        return ""
    del request.session[PENDING_SESSION_KEY]
    text, at = pending.get("text"), pending.get("at")
    if not isinstance(text, str) or not isinstance(at, float) or time.time() - at > PENDING_FOR_S:
        return ""
    return text
