"""Errors in the reader's language, from the wording saved with them.

``chat/llm`` (no Django) and the relay (``chat/generation/failures.py``) word their errors as
data: an English template and its params (``chat.llm.Wording``), saved as
``Message.error_wording`` beside the English ``error_message``. :func:`error_text` renders a
saved wording through this catalogue; nothing parses a sentence back. A provider's own words
(a 400's explanation, say) are params or messages of their own and are shown as written.

Every template the code can produce is listed below, exactly as written there, so
``makemessages`` finds it (``tests/test_error_wording.py`` checks that none is missing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext, gettext_noop

from chat.llm import Wording

logger = logging.getLogger(__name__)

TEMPLATES = frozenset(
    {
        # Fixed sentences: the error classes' default messages (chat/llm/events.py) ...
        gettext_noop("The model server failed."),
        gettext_noop("Could not reach the model server. Is it running?"),
        gettext_noop("Request timed out, please try again later."),
        gettext_noop("The model server rejected the API key (HTTP 401)."),
        gettext_noop("Rate limited by the model server; please wait a moment and retry."),
        gettext_noop("The model server refused the request."),
        gettext_noop("The model server reported an error while answering."),
        gettext_noop(
            "The answer was cut off: the model server closed the stream before finishing."
        ),
        gettext_noop("The model server sent a response that could not be understood."),
        # ... the client's (responses.py, transport.py, openai.py, dashscope.py) ...
        gettext_noop(
            "The answer was cut off: the model server ended the stream before finishing it."
        ),
        gettext_noop("The model server sent malformed data in the stream."),
        gettext_noop("The model server sent a reply that is not valid JSON."),
        gettext_noop("The model server sent a reply that is not a JSON object."),
        gettext_noop("The model server address is not a valid http(s) URL; check the base URL."),
        gettext_noop("The model server sent a body that could not be decoded."),
        gettext_noop("The model server's reply contained no answer."),
        # ... the service's own (chat/generation/failures.py) and the comparison's.
        gettext_noop("The server restarted before this answer finished. Retry to ask again."),
        gettext_noop("The server stopped before this answer finished. Retry to ask again."),
        gettext_noop("The answer was deleted."),
        # With params (errors.py, responses.py, transport.py, sse.py, deadline.py,
        # failures.py); a "detail" is the provider's words or a wording of ours (the 404 hint).
        gettext_noop("Rate limited by the model server; retry in %(seconds)s s."),
        gettext_noop("The model server rejected the API key (HTTP %(status)s)."),
        gettext_noop("Access denied by the model server (HTTP %(status)s)."),
        gettext_noop("Access denied by the model server (HTTP %(status)s): %(detail)s"),
        gettext_noop(
            "This model only answers streaming requests: turn Stream on and ask again "
            "(the model server said: %(detail)s)."
        ),
        gettext_noop("The model server refused the request (HTTP %(status)s)."),
        gettext_noop("The model server refused the request (HTTP %(status)s): %(detail)s"),
        gettext_noop("nothing answers at %(endpoint)s; check the base URL"),
        gettext_noop("The model server failed (HTTP %(status)s)."),
        gettext_noop("The model server failed (HTTP %(status)s): %(detail)s"),
        gettext_noop("The model server sent an unexpected response (HTTP %(status)s)."),
        gettext_noop("The model server did not send an event stream (content type %(type)s)."),
        gettext_noop("The model server sent a reply larger than %(limit)s MB."),
        gettext_noop("The model server sent a stream event larger than %(limit)s MB."),
        gettext_noop("The model server reported an error while answering (%(code)s)."),
        gettext_noop("Could not reach the model server (%(server)s). Is it running?"),
        gettext_noop("The model server (%(server)s) closed the connection without answering."),
        gettext_noop(
            "The model took longer than %(seconds)s s in all; the partial answer was kept."
        ),
        gettext_noop("The model took longer than %(seconds)s s in all to answer."),
        gettext_noop("Internal error (%(name)s); the partial answer was kept."),
    }
)


def error_text(wording: Mapping[str, Any] | None, fallback: str) -> str:
    """A saved error in the active language: ``gettext(template) % params``, nested wordings
    first. ``fallback`` (the English saved beside it) when there is no wording: a provider's
    own words, a row saved before wordings were, or one this version cannot read."""
    if not wording:
        return fallback
    try:
        return Wording.from_data(wording).text(gettext)
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("unreadable error wording (%s: %s)", type(exc).__name__, exc)
        return fallback
