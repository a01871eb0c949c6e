"""Coalescing that costs nothing when idle: a window driven by the event loop's measured lag.

A frame per token is what a reader wants and, on a worker with time to spare, what it gets:
the first token and every token after it go out the moment they arrive. Only when the loop
falls behind (it wakes late from a short sleep) does each answer wait a window after a frame,
so the tokens that arrive meanwhile share the next one: fewer frames, less CPU per token, just
when CPU is short. The window follows the lag (twice it, capped at ``STREAM_FRAME_INTERVAL_MS``)
and falls back to zero when the loop is quiet again.

``Turnstile`` paces the other kind of work: an answer's one-off drawing at its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TICK = 0.02  # seconds between two measurements while answers run
QUIET_LAG = 0.002  # below this the loop keeps up: no window
SMOOTHING = 0.3  # weight of the newest lag in the moving average


class Pacer:
    """One per worker: ``window`` is how long an answer waits after a frame before the next."""

    def __init__(self, max_window: float) -> None:
        self.max_window = max_window
        self.lag = 0.0  # the loop's recent lag (moving average), seconds
        self.window = 0.0
        self._task: asyncio.Task[None] | None = None

    def measure(self, lag: float) -> None:
        """Take one lag measurement into the window."""
        self.lag += SMOOTHING * (max(lag, 0.0) - self.lag)
        if self.lag < QUIET_LAG or self.max_window <= 0:
            self.window = 0.0
        else:
            self.window = min(self.max_window, 2 * self.lag)

    def start(self, busy: Callable[[], bool]) -> None:
        """Measure while ``busy()`` is true (answers run); a quiet worker pays nothing."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run(busy))

    async def _run(self, busy: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while busy():
            before = loop.time()
            await asyncio.sleep(TICK)
            self.measure(loop.time() - before - TICK)
        self.lag = self.window = 0.0


class Turnstile:
    """One answer at a time, one per pass of the event loop: for work that each answer does
    once but that many answers reach together, like drawing the final article (1-3 ms each).

    A hundred answers started within a second end within a second; the database thread hands
    back their final saves in runs, and the answers woken together drew their articles back
    to back while every other answer's tokens waited: ``make bench`` saw tens of ms of loop
    time per pass and a p99 of ~100 ms in that second (20 ms in the seconds before). Through
    the turnstile an answer waits for the one before it, and the loop reads and relays what
    arrived in between: the gate reopens on the loop's next pass, not at once (an answer
    woken in the same pass would walk straight through), and the waiter it wakes runs on
    the pass after, behind the I/O found meanwhile.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().call_soon(self._lock.release)
