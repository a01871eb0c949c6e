"""The stuck-reader phase: N answers alone, then beside one more socket that stops reading.

A browser that stops reading (a sleeping laptop, a stalled tab) must cost the server bounded
memory and leave the other sockets' latency alone; this phase measures both. Its socket first
fills the kernel's buffers (``StuckPlan``), so what follows can only pile up in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import websockets

from bench.analysis import by_marker
from bench.client import StreamProtocol, StreamRecord, make_prompt
from bench.phase_types import LevelResult, Pace, Target
from bench.phases import Bench
from bench.procs import kernel_unsent


@dataclass(frozen=True)
class StuckPlan:
    """What the stuck socket asks for.

    The server's kernel takes up to a couple of MB for a socket that does not read before
    anything waits in the server process (Linux grows the send buffer), so fast answers first
    fill that (``fill_sim``, one after another, until the send queue stops growing after at
    least ``fill_min`` of them, or ``fill_s`` passes); only then does the measured phase start,
    beside one long, fast answer (``long_sim``) that has nowhere to go but the server's memory.
    """

    fill_sim: dict[str, Any]
    long_sim: dict[str, Any]
    fill_s: float
    fill_min: int  # fill answers sent at least (a server busy elsewhere also looks "full")

    @property
    def fill_every_s(self) -> float:
        """The time one fill answer takes upstream, and a margin for the server to end it."""
        return float(self.fill_sim["tokens"]) / float(self.fill_sim["tps"]) + 0.5


@dataclass
class StuckResult:
    """N answers alone, then beside one more socket that stopped reading (``StuckPlan``)."""

    who: str
    clean: LevelResult
    stuck: LevelResult
    fill: str  # how the kernel's send buffer was filled before the measured phase
    fate: str  # how the stuck socket ended, as it saw it once it read again
    upstream: str = ""  # what the upstream sent for the long answer

    @property
    def rss_growth_mb(self) -> float:
        """The worker's peak RSS during the phase over its RSS when the phase began."""
        return (self.stuck.rss_hwm_kb - self.stuck.rss_before_kb) / 1024

    @property
    def clean_growth_mb(self) -> float:
        return (self.clean.rss_hwm_kb - self.clean.rss_before_kb) / 1024

    @property
    def p99_change(self) -> float:
        """Relative change of the other sockets' p99 (0.1 = 10% worse with the stuck socket)."""
        clean, stuck = self.clean.summary.p99_ms, self.stuck.summary.p99_ms
        return stuck / clean - 1 if clean and not math.isnan(clean) else math.nan


async def stuck_reader(
    bench: Bench, target: Target, streams: int, pace: Pace, stuck: StuckPlan
) -> StuckResult:
    """``streams`` answers alone, then again beside one socket that stopped reading.

    A first, unreported run settles the server at this load (its first concurrent level
    pays for growing its heap and caches), so that the two measured runs differ only by
    the stuck socket, in latency and in memory.
    """
    await bench.run_level(target, f"settle{streams}", streams, pace)
    clean = await bench.run_level(target, f"clean{streams}", streams, pace)
    seat = (await asyncio.to_thread(target.protocol.prepare, 1))[0]
    marker = f"bench-{target.tag}-stuck-0"
    reader = StuckReader(target.protocol, seat, marker, stuck)
    try:
        level = await bench.run_level(
            target, f"stuck{streams}", streams, pace, on_start=reader.start
        )
    finally:
        await reader.finish(drain_s=5.0)
    entry = await _wait_upstream_done(bench, f"{marker}-long", timeout_s=30.0)
    upstream = "the upstream never saw the long answer's request"
    if entry is not None:
        took = (entry.get("finished_at") or time.time()) - entry.get("started_at", 0.0)
        upstream = (
            f"the long answer: {entry.get('tokens_sent', 0)} tokens sent in {took:.1f} s, "
            f"{entry.get('outcome')}"
        )
    return StuckResult(target.who, clean, level, reader.fill, reader.fate, upstream)


async def _wait_upstream_done(bench: Bench, marker: str, timeout_s: float) -> dict[str, Any] | None:
    """Let a long upstream answer end before the next phase, so it cannot load that one;
    its log entry (None if the upstream never saw the request)."""
    deadline = time.monotonic() + min(timeout_s, max(bench.time_left(), 1.0))
    while True:
        entry = by_marker(await asyncio.to_thread(bench.simulator.requests)).get(marker)
        if entry is None or entry.get("outcome") != "streaming":
            return entry
        if time.monotonic() >= deadline:
            return entry
        await asyncio.sleep(0.25)


class StuckReader:
    """A socket that asks for answers and never reads them (and tolerates being closed)."""

    def __init__(self, protocol: StreamProtocol, seat: Any, marker: str, plan: StuckPlan) -> None:
        self.protocol = protocol
        self.seat = seat
        self.marker = marker
        self.plan = plan
        self.ws: Any = None
        self.port = 0
        self.sent = 0
        self.fill = "not started"
        self.fate = "never opened"

    def _unsent_kb(self) -> str:
        unsent = kernel_unsent(self.port) if self.port else None
        return "?" if unsent is None else f"{unsent / 1024:,.0f}"

    async def start(self) -> None:
        """Open the socket, fill the kernel's send buffer, then ask for the long answer."""
        self.ws = await self.protocol.connect(self.seat, stuck=True)
        self.port = int(self.ws.local_address[1])
        began = time.monotonic()
        next_send = began
        grown, steady_since = 0, began
        while (now := time.monotonic()) - began < self.plan.fill_s:
            if now >= next_send:
                await self._send(f"{self.marker}-fill{self.sent}", self.plan.fill_sim)
                next_send = now + self.plan.fill_every_s
            await asyncio.sleep(0.2)
            unsent = await asyncio.to_thread(kernel_unsent, self.port)
            if unsent is None:
                continue
            if unsent > grown + 16 * 1024:
                grown, steady_since = unsent, time.monotonic()
            elif (
                unsent
                and self.sent >= self.plan.fill_min
                and time.monotonic() - steady_since >= 1.0
            ):
                break  # the kernel takes no more: from now on the server keeps it
        self.fill = (
            f"{self.sent} fast answers, {time.monotonic() - began:.1f} s: "
            f"{self._unsent_kb()} KB unsent in the kernel"
        )
        await asyncio.sleep(max(0.0, next_send - time.monotonic()))  # the last one ends first
        await self._send(f"{self.marker}-long", self.plan.long_sim)

    async def _send(self, marker: str, sim: dict[str, Any]) -> None:
        await self.protocol.send(self.ws, make_prompt(marker, **sim))
        self.sent += 1

    async def finish(self, drain_s: float) -> None:
        """Read what the server kept for it (briefly) to learn how it ended; close."""
        if self.ws is None:
            return
        at_end = f"{self._unsent_kb()} KB unsent in the kernel at the end"
        frames = size = ended = 0
        record = StreamRecord(0, self.marker, "", self.protocol.name)
        try:
            async with asyncio.timeout(drain_s):
                while ended < self.sent:
                    raw = await self.ws.recv()
                    frames, size = frames + 1, size + len(raw.encode())
                    record.frames.append((0.0, raw))
                    if self.protocol.watch(record, raw):
                        ended += 1
                        record = StreamRecord(0, self.marker, "", self.protocol.name)
            how = f"all {ended} answers ended"
        except websockets.ConnectionClosed as exc:
            how = f"closed by the server (code {exc.rcvd.code if exc.rcvd else None})"
        except TimeoutError:
            how = f"{ended} of {self.sent} answers ended, still open after the drain"
        except Exception as exc:  # the stuck socket must never sink the run
            how = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        self.fate = f"{at_end}; {how}; {frames} frames ({size / 1024:,.0f} KB) waiting for it"
