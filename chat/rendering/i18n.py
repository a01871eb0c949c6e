"""Languages: the one a websocket speaks, durations in words, and fixed names translated.

Pages get their language from ``LocaleMiddleware`` (the ``django_language`` cookie, else the
browser's Accept-Language). A websocket has no middleware of that kind, so its consumer asks
:func:`language_from_scope`, which reads the same cookie and header from the handshake, and
renders its frames under ``translation.override``. A conversation's live frames (turn, deltas,
final) are broadcast to every socket showing it, so they are rendered once, in the language
of the socket that sent the message (carried in the ``Turn``).

Errors are saved with their wording as data and shown by ``chat/rendering/errors.py``
(:func:`~chat.rendering.errors.error_text`); here only names we give in English and show in the
reader's language (the simulator's), looked up by their exact text.
"""

from __future__ import annotations

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


# --- Fixed names (chat/providers.py names the simulator in English) ----------------------------

FIXED_NAMES = frozenset(
    {
        # What a comparison measured, when it is the simulator (chat/providers.py).
        gettext_noop("offline simulator"),
        # The default provider's name when it is the simulator (chat/providers.py).
        gettext_noop("Offline simulator"),
    }
)


def upstream_message(name: str) -> str:
    """A provider's name in the active language when it is one of ours ("Offline simulator"),
    else as its owner wrote it. Errors are shown by ``errors.error_text`` instead."""
    return gettext(name) if name in FIXED_NAMES else name
