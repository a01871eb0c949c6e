"""Waiting on other processes without trusting the clock: poll for the event up to a deadline
(``until``), or poll for the whole of a window that something never happens (``throughout``).

A machine running the suite on two cores beside other work can hold any process back for a
good fraction of a second, so a fixed ``sleep`` followed by one look either waits longer than
needed or misses what came late; and a tight upper bound on how long another process took
measures the scheduler. Deadlines here are generous; polling returns as soon as it can.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

EVERY = 0.05  # seconds between two looks


async def _look(check: Callable[[], T | Awaitable[T]]) -> T:
    result = check()
    if inspect.isawaitable(result):
        return await result
    return result


async def until(
    check: Callable[[], T | Awaitable[T]], what: str, within: float = 20.0, every: float = EVERY
) -> T:
    """Polls ``check`` (a function, or a coroutine function) until it returns something true,
    and returns that; fails saying ``what`` did not happen if not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if result := await _look(check):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(every)


def until_sync(check: Callable[[], T], what: str, within: float = 20.0, every: float = EVERY) -> T:
    """``until`` for synchronous tests (Playwright's sync API, plain HTTP)."""
    deadline = time.monotonic() + within
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(every)


async def throughout(
    check: Callable[[], object], what: str, during: float, every: float = EVERY
) -> None:
    """Polls ``check`` (a function, or a coroutine function) for the whole of ``during``
    seconds and fails the moment it is false: "nothing more happened" asserted over a window,
    not at one instant after a sleep."""
    deadline = time.monotonic() + during
    while True:
        assert await _look(check), what
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))


def throughout_sync(
    check: Callable[[], object], what: str, during: float, every: float = EVERY
) -> None:
    """``throughout`` for synchronous tests."""
    deadline = time.monotonic() + during
    while True:
        assert check(), what
        if time.monotonic() >= deadline:
            return
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
