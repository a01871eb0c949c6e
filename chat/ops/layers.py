"""The in-memory channel layer for one process, without the costs that grow with load.

Channels' ``InMemoryChannelLayer`` is correct but, per message, it sweeps every channel for
expired messages (O(open sockets) on each send and receive), starts one task per group member
on ``group_send``, and builds a throwaway ``asyncio.Queue``. At a few hundred concurrent
streams that alone made relay latency several times worse (see ``bench/``). This subclass keeps
its semantics (capacity, expiry, ``ChannelFull``, group expiry) and removes those costs:
the sweep runs at most once a second, group members get the message directly, and a flat
message of plain values is copied shallowly (deep-copying what cannot change is waste).
Several processes need ``REDIS_URL`` (channels-redis) instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)

_IMMUTABLE = (str, int, float, bool, type(None), bytes)


class LocalChannelLayer(InMemoryChannelLayer):
    sweep_interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            super()._clean_expired()

    def _queue(self, channel: str) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        flat = all(isinstance(value, _IMMUTABLE) for value in message.values())
        copy = dict(message) if flat else deepcopy(message)
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, copy))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            # As upstream, a full channel (its consumer is stuck) does not stop the others; but
            # say so, since that socket has lost a frame.
            try:
                await self.send(channel, message)
            except ChannelFull:
                logger.warning(
                    "channel %s is full: a %s message was dropped", channel, message.get("type")
                )
