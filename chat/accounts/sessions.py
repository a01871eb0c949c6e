"""Whether a signed-in socket's login still holds, read from the database without touching it.

A socket's user is fixed at its handshake; the signals (``accounts.signals``) close it when
the password changes, the account is deactivated or deleted, or its session row is deleted.
Whatever changes without a signal (a raw ``DELETE``, a ``QuerySet.update``, a session that
simply expires, a message lost on the channel layer) is caught here, by each socket's
periodic check (``STREAM_SESSION_CHECK_MS``).
"""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from chat.live.protocol import AccessReason


def session_problem(session_key: str, user_id: int | str) -> AccessReason | None:
    """Why this session no longer signs this user in, or None while it does.

    Read-only on purpose: Django's own ``get_user`` flushes a stale session or cycles its key
    (a fallback secret), which would sign a browser out behind its back or strand its cookie.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()  # {} when the row is gone or expired
    if not data or str(data.get(SESSION_KEY, "")) != str(user_id):
        return "session"
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None or not getattr(user, "is_active", True):
        return "account"
    stored = data.get(HASH_SESSION_KEY)
    if not isinstance(stored, str) or not stored:
        return "password"
    valid = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not any(constant_time_compare(stored, current) for current in valid):
        return "password"
    return None
