"""Signals of accounts: no socket outlives its user's login, on any worker.

- Signing out closes that session's sockets (``session.ended``).
- A password change closes the user's sockets in every other session (``access.ended`` to the
  user's group). The session that changed its own password stays signed in (Django's
  ``update_session_auth_hash`` cycles its key): its sockets are spared and told to reconnect,
  which they do with the new key (``session.renewed``).
- Deactivating or deleting a user closes all of their sockets.
- Deleting a session row (an administrator, a script) closes that session's sockets.

Inside a request the messages wait for its response (the ``account_events`` middleware runs
outside ``SessionMiddleware``): the session is saved with its new key by then, so a renewed
socket reconnects into it. Elsewhere (a shell, a command) they go once the transaction commits.
The channel layer is at-most-once and Redis may be away: each socket's periodic check
(``accounts.sessions``) catches whatever a message missed, and a password change or a
deactivation never fails for want of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.http import HttpRequest
from django.utils import timezone

from chat.live.protocol import (
    ACCESS_ENDED,
    SESSION_ENDED,
    SESSION_RENEWED,
    AccessEnded,
    AccessReason,
    SessionEnded,
    SessionRenewed,
    session_group,
    user_group,
)

logger = logging.getLogger(__name__)

# The fields whose change ends a user's logins elsewhere.
WATCHED_FIELDS = frozenset({"password", "is_active"})
Message = tuple[str, Any]  # (group, a protocol message)
# A Redis that does not answer holds a password change this long per message at most.
SEND_TIMEOUT = 5.0


def close_sockets_on_logout(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """Signing out closes the sockets that session opened, on every worker: a shared or
    public computer keeps no live view of the chats after "Sign out"."""
    key = request.session.session_key
    layer = get_channel_layer()
    if key and layer is not None:
        async_to_sync(layer.group_send)(session_group(key), SessionEnded(type=SESSION_ENDED))


# --- Held until the response: see the module's docstring ---------------------------------


@dataclass
class RequestEvents:
    """The request being served, and the messages it has to send once its response is ready."""

    request: HttpRequest
    pending: list[Message] = field(default_factory=list)


_current: ContextVar[RequestEvents | None] = ContextVar("streamside_account_events", default=None)


@contextlib.contextmanager
def collecting(request: HttpRequest) -> Iterator[RequestEvents]:
    """While serving ``request``, messages are held in the returned ``pending`` list."""
    events = RequestEvents(request)
    token = _current.set(events)
    try:
        yield events
    finally:
        _current.reset(token)


async def asend(messages: list[Message]) -> None:
    """Send each message; Redis away costs a warning, never the change that caused it."""
    layer = get_channel_layer()
    if layer is None:
        return
    for group, message in messages:
        try:
            await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT)
        except Exception as exc:
            logger.warning(
                "could not tell the sockets (%s): %s: %s; their periodic check will",
                message["type"],
                type(exc).__name__,
                exc,
            )


def send_now(messages: list[Message]) -> None:
    if messages:
        async_to_sync(asend)(messages)


def announce(group: str, message: Any) -> None:
    """Send once the transaction commits (a rolled-back change ends nothing); inside a
    request, once its response is ready."""

    def deliver() -> None:
        events = _current.get()
        if events is not None:
            events.pending.append((group, message))
        else:
            send_now([(group, message)])

    transaction.on_commit(deliver, robust=True)


# --- Users --------------------------------------------------------------------------------


def remember_account(
    sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """Before a user is saved: their password and ``is_active`` as stored, to tell what the
    save changes (one query, only for saves that may touch them; not ``last_login``'s)."""
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and not WATCHED_FIELDS & set(update_fields):
        return
    instance._streamside_stored = (
        sender._default_manager.filter(pk=instance.pk).values_list("password", "is_active").first()
    )


def end_access_on_account_change(
    sender: Any, instance: Any, created: bool = False, raw: bool = False, **kwargs: Any
) -> None:
    """A new password or a deactivation ends the user's logins: close their sockets."""
    stored = instance.__dict__.pop("_streamside_stored", None)
    if created or raw or stored is None:
        return
    password, was_active = stored
    reason: AccessReason
    if was_active and not instance.is_active:
        reason, keep = "account", ""
    elif password != instance.password:
        reason, keep = "password", _changing_session(instance)
    else:
        return
    announce(user_group(instance.pk), AccessEnded(type=ACCESS_ENDED, reason=reason, keep=keep))


def end_access_on_account_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce(user_group(instance.pk), AccessEnded(type=ACCESS_ENDED, reason="account", keep=""))


def _changing_session(user: Any) -> str:
    """The session group of a request changing its own user's password, or "": Django keeps
    that session signed in (``update_session_auth_hash``), so its sockets are renewed instead."""
    events = _current.get()
    if events is None:
        return ""
    who = getattr(events.request, "user", None)
    session = getattr(events.request, "session", None)
    if who is None or not who.is_authenticated or who.pk != user.pk or session is None:
        return ""
    key = session.session_key
    return session_group(key) if key else ""


# --- Sessions -----------------------------------------------------------------------------


def end_access_on_session_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A session row deleted: its sockets close, unless the key was only cycled (a login or a
    password change in that session), where they reconnect with the new key.

    An expired row (``clearsessions``) says nothing: its sockets' periodic check closed them
    when it expired, and a purge of thousands must not send thousands of messages.
    """
    key = instance.session_key
    if instance.expire_date <= timezone.now():
        return
    events = _current.get()
    if events is not None and _cycled(events.request, key):
        announce(session_group(key), SessionRenewed(type=SESSION_RENEWED))
    else:
        announce(session_group(key), AccessEnded(type=ACCESS_ENDED, reason="session", keep=""))


def _cycled(request: HttpRequest, key: str) -> bool:
    """Deleted by ``cycle_key`` in this request: the request's own session already holds its
    new key (``flush``, signing out, deletes first and drops the key after)."""
    session = getattr(request, "session", None)
    if session is None or request.COOKIES.get(settings.SESSION_COOKIE_NAME) != key:
        return False
    return session.session_key not in (None, key)


def connect() -> None:
    """Connect every handler (from ``ChatConfig.ready``)."""
    from django.contrib.auth.signals import user_logged_out

    user_logged_out.connect(close_sockets_on_logout, dispatch_uid="chat-close-sockets")
    user = get_user_model()
    pre_save.connect(remember_account, sender=user, dispatch_uid="chat-account-stored")
    post_save.connect(end_access_on_account_change, sender=user, dispatch_uid="chat-account")
    post_delete.connect(end_access_on_account_delete, sender=user, dispatch_uid="chat-account-gone")
    # Sessions kept in the database (the default engine) say when a row goes; others (cache,
    # signed cookies) have no rows: the sockets' periodic check alone applies there.
    store = import_module(settings.SESSION_ENGINE).SessionStore
    model = getattr(store, "get_model_class", None)
    if model is not None:
        post_delete.connect(
            end_access_on_session_delete, sender=model(), dispatch_uid="chat-session-gone"
        )
