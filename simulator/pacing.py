"""When tokens go out: the token clock, keep-alive waits, stalls and the disconnect watch.

Pacing is shared by both protocols' streams so ``ttft``, ``tps``, coalescing and the faults that
cut a stream short (``eof``, ``midstream_error``, ``stall`` after ``fault_after`` tokens) time
the same way whichever wire format carries the tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from simulator.call import Call, Plan
from simulator.wire import Receive, Wire

__all__ = [
    "CUT_FAULTS",
    "STALL_MAX_SECONDS",
    "Piece",
    "paced",
    "sleep_until",
    "sleep_with_pings",
    "stall",
    "until_disconnect",
]

STALL_MAX_SECONDS = 600.0
CUT_FAULTS = frozenset({"eof", "midstream_error", "stall"})
"""Faults that end a response after ``fault_after`` tokens."""


@dataclass(frozen=True)
class Piece:
    """One paced chunk: reasoning or answer text, never both."""

    reasoning: bool
    text: str
    count: int
    first_of_phase: bool
    last: bool
    """This chunk completes the plan and no fault follows: the response ends with it."""


async def paced(call: Call, plan: Plan, wire: Wire, rng: random.Random) -> AsyncIterator[Piece]:
    """Yield the plan's chunks against absolute monotonic deadlines, logging each once written.

    ``ttft`` passes before the first token (reasoning if the request thinks), then one token is
    due every ``1/tps`` seconds; tokens already due are coalesced, never across the switch from
    reasoning to answer. Faults that cut the response stop it after ``fault_after`` tokens.
    """
    opts, entry = call.opts, call.entry
    thinking = len(plan.reasoning)
    cut = min(plan.total, opts.fault_after) if opts.fault in CUT_FAULTS else plan.total
    start = time.monotonic() + opts.ttft
    sent = 0
    while sent < cut:
        due = start + sent / opts.tps
        if sent == 0 and opts.keepalive:
            await sleep_with_pings(due, wire)
        else:
            await sleep_until(due)
        now = time.monotonic()
        is_reasoning = sent < thinking
        phase_end = min(thinking, cut) if is_reasoning else cut
        count = 1
        while (
            sent + count < phase_end
            and count < opts.coalesce
            and start + (sent + count) / opts.tps <= now
        ):
            count += 1
        if is_reasoning:
            text = "".join(plan.reasoning[sent : sent + count])
        else:
            text = "".join(plan.answer[sent - thinking : sent - thinking + count])
        if opts.stamp:
            text = f"⟦{time.time():.6f}⟧{text}"
        yield Piece(
            reasoning=is_reasoning,
            text=text,
            count=count,
            first_of_phase=sent in (0, thinking),
            last=sent + count == plan.total and opts.fault not in CUT_FAULTS,
        )
        sent += count
        now_epoch = time.time()
        if is_reasoning:
            entry["reasoning_tokens_sent"] += count
            entry["reasoning"] += text
        else:
            entry["tokens_sent"] += count
            entry["text"] += text
            if entry["first_answer_at"] is None:
                entry["first_answer_at"] = now_epoch
        if entry["first_token_at"] is None:
            entry["first_token_at"] = now_epoch
        if opts.keepalive and rng.random() < 0.1:
            await wire.comment()


async def sleep_until(deadline: float) -> None:
    # Always yield: Daphne's send never suspends, so a stream that is behind schedule would
    # otherwise hog the loop and hide the client's disconnect.
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def sleep_with_pings(deadline: float, wire: Wire, every: float = 0.1) -> None:
    """Wait for the first token while sending ``: keep-alive`` comments every ``every`` s."""
    next_ping = time.monotonic() + every
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= next_ping:
            await wire.comment()
            next_ping += every
            continue
        await asyncio.sleep(min(deadline, next_ping) - now)


async def stall(wire: Wire) -> None:
    """Send nothing more for ``STALL_MAX_SECONDS``; with ``keepalive``, nothing but pings."""
    if wire.opts.keepalive:
        await sleep_with_pings(time.monotonic() + STALL_MAX_SECONDS, wire)
    else:
        await asyncio.sleep(STALL_MAX_SECONDS)


async def until_disconnect(work: Awaitable[None], receive: Receive) -> float | None:
    """Run ``work`` until it ends or the client disconnects; return the disconnect epoch if so.

    The simulator must notice a disconnect while it is sleeping between tokens, which is how
    tests prove the app's Stop button cancels the upstream request.
    """

    async def watch() -> float:
        while (await receive())["type"] != "http.disconnect":
            pass
        return time.time()

    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            # Finishing the response makes Daphne queue http.disconnect too: the job wins.
            job.result()
            return None
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        return watcher.result()
    finally:
        for task in (job, watcher):
            if not task.done():
                task.cancel()
