"""One job at a time for one socket: refills, database checks and snapshots run in order.

A follower shows in-order frames inline; anything slower goes into this line, and frames that
arrive meanwhile queue behind it, so they keep their order and the publisher never waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from django.utils import translation

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class JobLine:
    """A queue of jobs run one at a time, in a task of its own or in the caller's."""

    def __init__(self, name: str, language: Callable[[], str]) -> None:
        self.name = name  # the socket's channel, for logs
        self.language = language  # jobs write frames in the socket's (chosen on connect)
        self.busy = False
        self._jobs: deque[Job] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def queue(self, job: Job) -> None:
        """Run ``job`` after the others, in this line's own task."""
        self._jobs.append(job)
        if not self.busy:
            self._take()
            self.spawn(self._work())

    async def exclusive(self, job: Job) -> None:
        """Run ``job`` in the caller's task once no other job runs; frames wait meanwhile."""
        while self.busy:
            await self._idle.wait()
        self._take()
        try:
            await job()
        finally:
            try:
                await self._drain()
            finally:
                self._release()

    def spawn(self, coroutine: Awaitable[None]) -> None:
        """A task held until it ends (and cancelled by ``close``)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._jobs.clear()
        for task in list(self._tasks):
            task.cancel()

    async def _work(self) -> None:
        try:
            with translation.override(self.language() or None):
                await self._drain()
        finally:
            self._release()

    async def _drain(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed refill must not wedge the socket
                logger.exception("socket %s: a live job failed", self.name)

    def _take(self) -> None:
        self.busy = True
        self._idle.clear()

    def _release(self) -> None:
        self.busy = False
        self._idle.set()
