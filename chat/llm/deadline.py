"""The overall deadline of one reply, the second of the two clocks that bound it.

The pool's read timeout is an idle timeout: it fires when no byte at all arrives for that
long, so a stream that stalls after a few tokens ends there. SSE keep-alive comments are
bytes, and a server that only sends them is alive by that measure; the overall deadline
(``ChatClient``'s ``total_timeout``) ends such a reply, and any other that runs too long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from .events import UpstreamTimeout
from .wording import Wording

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The overall deadline of a reply passed while waiting for the upstream."""


class Deadline:
    """One reply's overall deadline, enforced only while it waits for the upstream.

    One timer per attempt rather than a timeout scope per read (which costs a timer per
    event): when it fires while ``wait`` is awaiting the upstream, it cancels that await and
    ``wait`` raises ``DeadlinePassed``; when it fires while the caller has the event (the
    generator is suspended at a ``yield``), the next ``wait`` raises at once. A cancellation
    from anyone else still propagates as ``CancelledError``.
    """

    def __init__(self, when: float | None) -> None:
        self.when = when
        self.expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def __enter__(self) -> Deadline:
        if self.when is not None:
            loop = asyncio.get_running_loop()
            if loop.time() >= self.when:
                self.expired = True
            else:
                self._handle = loop.call_at(self.when, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self.expired = True
        if self._task is not None and not self._task.done():
            self._cancelled = True
            self._task.cancel()

    def check(self) -> None:
        if self.expired:
            raise DeadlinePassed

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.when is None:
            return await awaitable
        task = self._task = asyncio.current_task()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._cancelled and task is not None:
                self._cancelled = False
                if task.uncancel() == 0:  # nobody else wants this task cancelled
                    raise DeadlinePassed from None
            raise
        finally:
            self._task = None
            if self._cancelled and task is not None:  # the cancellation was swallowed below
                self._cancelled = False
                task.uncancel()


def deadline_error(total_timeout: float | None, *, partial: bool) -> UpstreamTimeout:
    """What the user is told when the overall deadline ended the reply."""
    total = f"{total_timeout or 0:g}"
    if partial:
        return UpstreamTimeout(
            Wording(
                "The model took longer than %(seconds)s s in all; the partial answer was kept.",
                seconds=total,
            )
        )
    return UpstreamTimeout(
        Wording("The model took longer than %(seconds)s s in all to answer.", seconds=total)
    )
