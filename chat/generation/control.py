"""The cross-worker control plane: what one worker hears from the others.

Each worker reads one channel of its own (its "worker channel"), a member of
``WORKERS_GROUP`` and of the group of every conversation one of its sockets shows. On it come:
Stop and snapshot requests for answers it may run, the others' presence (who follows what),
other workers' frames for its sockets (given to the hub), and its own Redis probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import translation

from chat.live.hub import LiveHub
from chat.live.protocol import (
    FOLLOW_EVENT,
    FRAME_EVENT,
    HELLO_EVENT,
    PRESENCE_EVENT,
    PROBE_EVENT,
    SNAPSHOT_REQUEST,
    STOP_EVENT,
    UNFOLLOW_EVENT,
    WORKERS_GROUP,
    FrameEvent,
    Hello,
    SnapshotEvent,
    SnapshotRequest,
    StopRequest,
    conversation_group,
)
from chat.ops.layer_probe import LayerProbe, can_probe

logger = logging.getLogger(__name__)

GROUP_REFRESH = 3600.0  # seconds; channels-redis forgets group members after a day


def ask_workers_to_stop(conversation_id: int, answer_ids: list[int]) -> None:
    """From sync code (a view): ask every worker, this one too, to stop these answers. The one
    running each stops it; the layer unreachable, the answers end with their worker anyway."""
    layer = get_channel_layer()
    if layer is None or not answer_ids:
        return
    try:
        for answer_id in answer_ids:
            async_to_sync(layer.group_send)(
                WORKERS_GROUP,
                # types-channels wants a dict[str, Any]; a TypedDict is one at run time.
                StopRequest(  # type: ignore[arg-type]
                    type=STOP_EVENT, conversation=conversation_id, answer=answer_id
                ),
            )
    except Exception as exc:  # Redis away: deleting the conversation still goes ahead
        logger.warning("could not pass Stop to the workers: %s: %s", type(exc).__name__, exc)


class ControlPlane:
    """Listens on this worker's channel; one per generation service."""

    def __init__(
        self,
        layer: Any,
        hub: LiveHub,
        *,
        stop_here: Callable[[int, int], bool],
        snapshot_here: Callable[[int, int, str], SnapshotEvent | None],
    ) -> None:
        self.layer = layer
        self.hub = hub
        self.stop_here = stop_here  # (conversation, answer) -> ran here
        self.snapshot_here = snapshot_here  # (conversation, answer, language) -> text so far
        self.probe: LayerProbe | None = None  # is this worker still hearing Redis?
        self._tasks: list[asyncio.Task[None]] = []  # held: a task nobody holds may vanish

    async def request_stop(self, conversation_id: int, answer_id: int) -> None:
        await self.layer.group_send(
            WORKERS_GROUP,
            StopRequest(type=STOP_EVENT, conversation=conversation_id, answer=answer_id),
        )

    async def request_snapshot(self, conversation_id: int, answer_id: int, reply_to: str) -> None:
        """Ask whichever worker generates the answer to send ``reply_to`` its text so far."""
        await self.layer.group_send(
            WORKERS_GROUP,
            SnapshotRequest(
                type=SNAPSHOT_REQUEST,
                conversation=conversation_id,
                answer=answer_id,
                reply_to=reply_to,
                language=translation.get_language() or "",  # the asking socket's
            ),
        )

    async def listen(self) -> None:
        layer = self.layer
        # The default prefix on purpose: channels-redis reads a process's channels through one
        # shared receive loop, and a channel of another prefix would hold it for seconds.
        channel = await layer.new_channel()
        self.hub.worker = channel
        probe = LayerProbe(layer, channel)
        if can_probe(layer):
            self.probe = probe
            self._tasks.append(asyncio.create_task(probe.run(), name="channel-layer-probe"))
        if self.hub.cross_process:
            self._tasks.append(asyncio.create_task(self.hub.keep_present(), name="presence"))
        joined: float | None = None  # not 0.0: the monotonic clock starts near 0 at boot
        while True:
            if joined is None or time.monotonic() - joined > GROUP_REFRESH:  # membership expires
                try:
                    await self._join()
                except Exception as exc:  # Redis away at start: try again in a moment
                    logger.warning("could not join the workers' group: %s", exc)
                    await asyncio.sleep(1)
                    continue
                joined = time.monotonic()
            try:
                message = await layer.receive(channel)
            except Exception as exc:  # a Redis hiccup must not end the listening for good
                if "Timeout" in type(exc).__name__:
                    continue  # an idle blocking read that redis-py gave up on: read again
                logger.exception("listening for other workers' requests failed")
                await asyncio.sleep(1)
                continue
            try:
                await self._handle(message, probe)
            except Exception:  # one bad message must not end the listening
                logger.exception("handling a %s message failed", message.get("type"))

    async def _join(self) -> None:
        first = not self.hub.ready.is_set()
        await self.layer.group_add(WORKERS_GROUP, self.hub.worker)
        for conversation_id in list(self.hub.local):  # after a refresh: every group again
            await self.layer.group_add(conversation_group(conversation_id), self.hub.worker)
        self.hub.ready.set()
        if first and self.hub.cross_process:
            await self.layer.group_send(
                WORKERS_GROUP, Hello(type=HELLO_EVENT, worker=self.hub.worker)
            )

    async def _handle(self, message: dict[str, Any], probe: LayerProbe) -> None:
        kind = message.get("type")
        if kind == FRAME_EVENT:
            await self._frame(message)  # type: ignore[arg-type]
        elif kind == PROBE_EVENT:
            probe.hear(message)
        elif kind in (FOLLOW_EVENT, UNFOLLOW_EVENT, PRESENCE_EVENT):
            self.hub.heard(message)  # type: ignore[arg-type]
        elif kind == HELLO_EVENT:
            await self.hub.answer_hello(message)  # type: ignore[arg-type]
        elif kind == STOP_EVENT:
            self.stop_here(int(message["conversation"]), int(message["answer"]))
        elif kind == SNAPSHOT_REQUEST:
            try:
                await self._send_snapshot(message)  # type: ignore[arg-type]
            except Exception:  # the asker falls back to the database
                logger.warning("could not send a snapshot of answer %s", message.get("answer"))

    async def _frame(self, event: FrameEvent) -> None:
        """Another worker's frame for a conversation shown here."""
        if event["worker"] == self.hub.worker:
            return  # our own, already delivered here directly
        conversation_id = event["conversation"]
        if not self.hub.follows(conversation_id):
            return
        if not event["followed"] and event["worker"]:
            # Its publisher did not know we follow: its deltas did not come. Say so; our
            # sockets refill what they missed from a snapshot, as after any gap.
            await self.hub.tell(event["worker"], conversation_id)
        await self.hub.deliver(event)

    async def _send_snapshot(self, request: SnapshotRequest) -> None:
        snapshot = self.snapshot_here(
            int(request["conversation"]), int(request["answer"]), str(request.get("language", ""))
        )
        if snapshot is None:
            return  # not ours (or already finished: its final frame went to the group)
        await self.layer.send(str(request["reply_to"]), snapshot)
