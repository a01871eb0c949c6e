"""Local delivery first: this worker's followers by conversation, and who follows elsewhere.

A frame goes from the answer's task straight to the followers (sockets) of this worker that
show its conversation: no channel layer, no queue, no copy. It crosses the channel layer only
when another worker follows the conversation, and then once per frame (the conversation's group
holds worker channels, not sockets; each worker fans it out to its own sockets).

How a worker knows who follows where (presence):

- a worker whose first socket shows a conversation joins the conversation's group with its
  control channel, then tells every worker (``live.follow``); its last socket gone, it leaves
  and says so (``live.unfollow``);
- every ``PRESENCE_EVERY`` seconds each worker repeats all it follows (``live.presence``);
  what is not repeated within ``PRESENCE_TTL`` is forgotten (a worker killed without a word);
- a worker that starts asks the others (``live.hello``) and they answer with their presence;
- turn and final frames always cross the layer (two per answer), carrying ``followed``: a
  follower that learns that way that the publisher did not know of it tells it directly; its
  sockets refill the deltas they missed from a snapshot, as after any gap.

With the in-process layer (one worker) nothing crosses the layer at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .protocol import (
    FOLLOW_EVENT,
    PRESENCE_EVENT,
    UNFOLLOW_EVENT,
    WORKERS_GROUP,
    Follow,
    FrameEvent,
    Hello,
    Presence,
    Unfollow,
    conversation_group,
)

logger = logging.getLogger(__name__)

PRESENCE_EVERY = 20.0  # seconds between a worker's presence messages (one publish each)
PRESENCE_TTL = 3 * PRESENCE_EVERY + 5.0  # forgotten unless repeated within this


class Follower(Protocol):
    """What the hub delivers to: one socket's side of the live protocol (``follower``)."""

    async def deliver(self, event: FrameEvent) -> None: ...


class LiveHub:
    """One per event loop (one Daphne worker), owned by the generation service."""

    def __init__(
        self, layer: Any, *, cross_process: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.layer = layer
        self.cross_process = cross_process
        self.clock = clock
        self.worker = ""  # this worker's control channel, once it listens
        self.ready = asyncio.Event()  # set once ``worker`` is known (or never needed)
        if not cross_process:
            self.ready.set()
        self.local: dict[int, set[Follower]] = {}
        self.remote: dict[int, dict[str, float]] = {}  # conversation -> worker -> expires at

    # This worker's followers ----------------------------------------------------------------

    async def follow(self, conversation_id: int, follower: Follower) -> None:
        """A socket here shows the conversation; the first one makes the worker follow it."""
        followers = self.local.setdefault(conversation_id, set())
        first = not followers
        followers.add(follower)
        if first and self.cross_process:
            await self.ready.wait()
            try:
                # Join before announcing: a frame sent once the others know must find us in.
                await self.layer.group_add(conversation_group(conversation_id), self.worker)
                await self.layer.group_send(
                    WORKERS_GROUP,
                    Follow(type=FOLLOW_EVENT, conversation=conversation_id, worker=self.worker),
                )
            except Exception as exc:  # Redis away: presence is repeated, gaps are refilled
                logger.warning("could not follow conversation %d: %s", conversation_id, exc)

    async def unfollow(self, conversation_id: int, follower: Follower) -> None:
        followers = self.local.get(conversation_id)
        if followers is None or follower not in followers:
            return
        followers.discard(follower)
        if followers:
            return
        del self.local[conversation_id]
        if self.cross_process and self.worker:
            try:
                await self.layer.group_send(
                    WORKERS_GROUP,
                    Unfollow(type=UNFOLLOW_EVENT, conversation=conversation_id, worker=self.worker),
                )
                await self.layer.group_discard(conversation_group(conversation_id), self.worker)
            except Exception as exc:  # Redis away: the others forget us when presence expires
                logger.warning("could not unfollow conversation %d: %s", conversation_id, exc)

    async def deliver(self, event: FrameEvent) -> None:
        """Give a frame to every follower here of its conversation.

        A follower's ``deliver`` never waits on the database or another worker (its slow work
        runs in a task of its own), so one slow socket does not hold up the others.
        """
        for follower in list(self.local.get(event["conversation"], ())):
            try:
                await follower.deliver(event)
            except Exception:  # one broken socket must not cost the others their frame
                logger.exception("delivering a frame of answer %d failed", event["answer"])

    def follows(self, conversation_id: int) -> bool:
        return conversation_id in self.local

    # Other workers' followers ---------------------------------------------------------------

    def followed_elsewhere(self, conversation_id: int) -> bool:
        """Does another worker (as far as this one has heard) show this conversation?"""
        workers = self.remote.get(conversation_id)
        if not workers:
            return False
        now = self.clock()
        for worker, expires in list(workers.items()):
            if expires < now:
                del workers[worker]
        if not workers:
            del self.remote[conversation_id]
        return bool(workers)

    def heard(self, message: Follow | Unfollow | Presence) -> None:
        """Another worker's follow, unfollow or presence (our own echo is ignored)."""
        worker = message["worker"]
        if worker == self.worker:
            return
        expires = self.clock() + PRESENCE_TTL
        if message["type"] == FOLLOW_EVENT:
            self.remote.setdefault(message["conversation"], {})[worker] = expires
        elif message["type"] == UNFOLLOW_EVENT:
            workers = self.remote.get(message["conversation"], {})
            workers.pop(worker, None)
        else:
            for conversation_id in message["conversations"]:
                self.remote.setdefault(conversation_id, {})[worker] = expires

    def presence(self) -> Presence:
        return Presence(type=PRESENCE_EVENT, worker=self.worker, conversations=list(self.local))

    async def answer_hello(self, hello: Hello) -> None:
        """A worker just started: tell it what this one follows."""
        if hello["worker"] != self.worker and self.local:
            await self.layer.send(hello["worker"], self.presence())

    async def tell(self, worker: str, conversation_id: int) -> None:
        """Tell one worker that this one follows a conversation (it published as if not)."""
        await self.layer.send(
            worker, Follow(type=FOLLOW_EVENT, conversation=conversation_id, worker=self.worker)
        )

    async def keep_present(self) -> None:
        """Repeat this worker's presence, so the others' knowledge of it never expires."""
        while True:
            await asyncio.sleep(PRESENCE_EVERY)
            if not self.local:
                continue
            try:
                await self.layer.group_send(WORKERS_GROUP, self.presence())
            except Exception as exc:  # Redis away: the next round tries again
                logger.warning("could not send this worker's presence: %s", exc)
