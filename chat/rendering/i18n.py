"""Languages: the one a websocket speaks, durations in words, and upstream errors translated.

Pages get their language from ``LocaleMiddleware`` (the ``django_language`` cookie, else the
browser's Accept-Language). A websocket has no middleware of that kind, so its consumer asks
:func:`language_from_scope`, which reads the same cookie and header from the handshake, and
renders its frames under ``translation.override``. A conversation's live frames (turn, deltas,
final) are broadcast to every socket showing it, so they are rendered once, in the language
of the socket that sent the message (carried in the ``Turn``).

``chat/llm`` has no Django in it and words its errors in English; they are stored that way
(``Message.error_message``). :func:`upstream_message` translates them when they are shown:
the fixed ones by their text, the ones with figures in them (an HTTP status, a wait, a host)
by the patterns below, which put the figures back into the translated sentence. A provider's
own words (a 400's explanation, say) are shown as the provider wrote them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.template.defaultfilters import floatformat
from django.utils import translation
from django.utils.translation import gettext, gettext_noop
from django.utils.translation.trans_real import language_code_re, parse_accept_lang_header

SESSION_LANGUAGE_KEY = "_language"  # where Django < 4 kept it; read if a session has one


def _supported(code: str | None) -> str | None:
    if not code:
        return None
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return None


def language_from_scope(scope: Mapping[str, Any]) -> str:
    """The language of a websocket, chosen as ``LocaleMiddleware`` chooses a page's: the
    ``django_language`` cookie, else the session's, else Accept-Language, else the default.

    Sync: reading the session may touch the database.
    """
    cookies = scope.get("cookies") or {}
    chosen = _supported(cookies.get(settings.LANGUAGE_COOKIE_NAME))
    session = scope.get("session")
    if chosen is None and session is not None and getattr(session, "session_key", None):
        chosen = _supported(session.get(SESSION_LANGUAGE_KEY))
    if chosen is not None:
        return chosen
    headers = dict(scope.get("headers") or [])
    accept = headers.get(b"accept-language", b"").decode("latin-1")
    for code, _quality in parse_accept_lang_header(accept):
        if code == "*":
            break
        if language_code_re.search(code) and (found := _supported(code)):
            return found
    return _supported(settings.LANGUAGE_CODE) or settings.LANGUAGE_CODE


def duration(value: float | None, digits: int = 1) -> str:
    """Seconds as the reader's language writes them: "2.4 s", "2.4 秒"; "—" when unknown."""
    if value is None:
        return "—"
    return gettext("%(seconds)s s") % {"seconds": floatformat(value, digits)}


def seconds(value: float | None) -> str:
    """0.41 s below a second, 9.8 s below a hundred: as precise as a person reads it (and in
    the active language: "0.41 秒")."""
    if value is None:
        return "—"
    return duration(value, 2 if value < 1 else 1 if value < 100 else 0)


# --- Upstream errors (worded in English by chat/llm, which has no Django) --------------------

# The fixed sentences of chat/llm (events.py's default messages, client.py, openai.py,
# dashscope.py) and of the relay (services.py), marked here so makemessages finds them.
FIXED_MESSAGES = frozenset(
    {
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
        gettext_noop(
            "The answer was cut off: the model server ended the stream before finishing it."
        ),
        gettext_noop("The model server sent malformed data in the stream."),
        gettext_noop("The model server sent a reply that is not valid JSON."),
        gettext_noop("The model server sent a reply that is not a JSON object."),
        gettext_noop("The model server address is not a valid http(s) URL; check the base URL."),
        gettext_noop("The model server sent a body that could not be decoded."),
        gettext_noop("The model server's reply contained no answer."),
        gettext_noop("The server restarted before this answer finished. Retry to ask again."),
        gettext_noop("The server stopped before this answer finished. Retry to ask again."),
        gettext_noop("The answer was deleted."),
        # What a comparison measured, when it is the simulator (chat/providers.py).
        gettext_noop("offline simulator"),
        # The default provider's name when it is the simulator (chat/providers.py).
        gettext_noop("Offline simulator"),
    }
)

# Sentences with figures in them, as chat/llm writes them (English), marked for translation.
# Each is matched by its own text with the placeholders as groups (what a group may hold is
# below); a "detail" may itself be one of ours (a 404's hint) or the provider's words.
_TEMPLATES = (
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
    gettext_noop("The model server reported an error while answering (%(code)s)."),
    gettext_noop("Could not reach the model server (%(server)s). Is it running?"),
    gettext_noop("The model server (%(server)s) closed the connection without answering."),
    gettext_noop("The model took longer than %(seconds)s s in all; the partial answer was kept."),
    gettext_noop("The model took longer than %(seconds)s s in all to answer."),
    gettext_noop("Internal error (%(name)s); the partial answer was kept."),
)
_GROUPS = {
    "seconds": r"[\d.e+]+",
    "status": r"\d+",
    "endpoint": r"\S+",
    "name": r"\w+",
    "detail": r"(?s:.*)",
}  # any other placeholder: ".+"


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"%\((\w+)\)s", template)  # text, name, text, name, ..., text
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>{_GROUPS.get(part, '.+')})"
        for index, part in enumerate(parts)
    )
    return re.compile(regex)


_PATTERNS = tuple((_pattern(template), template) for template in _TEMPLATES)


def upstream_message(message: str) -> str:
    """An error as stored (English, from chat/llm or the relay) in the active language.

    Text that is not one of ours (a provider's own message) is returned unchanged.
    """
    if not message:
        return message
    if message in FIXED_MESSAGES:
        return gettext(message)
    for pattern, template in _PATTERNS:
        match = pattern.fullmatch(message)
        if match:
            parts = match.groupdict()
            if "detail" in parts:
                parts["detail"] = upstream_message(parts["detail"])
            return gettext(template) % parts
    return message
