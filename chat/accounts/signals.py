"""Signals of accounts: signing out closes that session's sockets on every worker."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest

from chat.live.protocol import SESSION_ENDED, SessionEnded, session_group


def close_sockets_on_logout(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """Signing out closes the sockets that session opened, on every worker: a shared or
    public computer keeps no live view of the chats after "Sign out"."""
    key = request.session.session_key
    layer = get_channel_layer()
    if key and layer is not None:
        async_to_sync(layer.group_send)(session_group(key), SessionEnded(type=SESSION_ENDED))
