"""Is this worker still hearing Redis? It sends itself a message through the channel layer.

channels-redis' pub/sub layer subscribes once to each channel and group. When Redis drops the
connection, redis-py reconnects and subscribes again; but if Redis refuses that (permissions
changed meanwhile, say), the connection stays up subscribed to nothing, and nothing reports it.
The worker would go on generating and saving while its sockets got no frames (only final
answers, from the database) and it heard no Stop or snapshot request from the others. So every
``PROBE_EVERY`` seconds it sends itself a probe; one that does not come back in
``PROBE_TIMEOUT`` seconds makes it subscribe again to all it listens to. Two lost in a row
(or refused) and ``/healthz`` says the worker is unavailable, so a balancer can leave it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chat.live.protocol import PROBE_EVENT, Probe

logger = logging.getLogger(__name__)

PROBE_EVERY = 5.0  # seconds between probes: one publish per worker, next to nothing
PROBE_TIMEOUT = 3.0  # a probe is a round trip to Redis: milliseconds when all is well


class LayerProbe:
    """Sends numbered probes to ``channel`` (which the worker's control listener reads) and
    subscribes again when one is lost while Redis is reachable."""

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.sent = 0
        self.heard = 0
        self.lost_in_a_row = 0  # probes refused by Redis or not heard back

    @property
    def deaf(self) -> bool:
        return self.lost_in_a_row >= 2

    def hear(self, message: dict[str, Any]) -> None:
        """Called by the listener for each probe it receives."""
        self.heard = max(self.heard, int(message.get("n", 0)))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY)
            self.sent += 1
            try:
                await self.layer.send(self.channel, Probe(type=PROBE_EVENT, n=self.sent))
            except Exception:  # Redis unreachable: redis-py reconnects and resubscribes itself
                self.lost_in_a_row += 1
                continue
            await asyncio.sleep(PROBE_TIMEOUT)
            if self.heard >= self.sent:
                self.lost_in_a_row = 0
                continue
            self.lost_in_a_row += 1
            logger.warning(
                "this worker stopped hearing the channel layer (probe %d lost): subscribing again",
                self.sent,
            )
            try:
                count = await resubscribe(self.layer)
            except Exception as exc:  # Redis went away meanwhile: the next probe tries again
                logger.warning("subscribing again failed: %s: %s", type(exc).__name__, exc)
            else:
                logger.info("subscribed again to %d channels and groups", count)


def can_probe(layer: Any) -> bool:
    """Only channels-redis' pub/sub layer can go deaf; the in-memory one is this process."""
    return type(layer).__name__ == "RedisPubSubChannelLayer" and hasattr(layer, "_get_layer")


async def resubscribe(layer: Any) -> int:
    """Subscribe again to every channel and group this process listens to (SUBSCRIBE to a
    channel already subscribed is harmless). Returns how many.

    channels-redis has no public call for this; it reaches into its pub/sub layer for this
    event loop (version pinned in requirements.txt; the test of a deaf worker guards it).
    """
    count = 0
    for shard in layer._get_layer()._shards:
        async with shard._lock:
            names = list(shard._subscribed_to)
            if shard._pubsub is not None and names:
                await shard._pubsub.subscribe(*names)
                count += len(names)
    return count
