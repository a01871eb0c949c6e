"""The Enter -> upstream phase: how long from a user's send to the upstream request.

What the app does between the two (session, database rows, the turn frame) is its difference
with the baseline, which does none of it; so it is timed on an idle server, one message at a
time, each on a socket opened beforehand (opening is not part of what a user waits for).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from bench.analysis import percentile
from bench.client import make_prompt, one_answer
from bench.phase_types import Target
from bench.phases import Bench
from bench.procs import clear_sim_log


@dataclass
class EnterResult:
    """Client sends a chat message -> the simulator receives the upstream request, per send."""

    who: str
    samples_ms: list[float]
    failed: int

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms, default=math.nan)


async def enter_to_upstream(bench: Bench, target: Target, sends: int) -> EnterResult:
    """``sends`` messages one after another on an idle server, each on a socket opened
    beforehand: how long from the client's send to the upstream request's arrival."""
    seats = await asyncio.to_thread(target.protocol.prepare, sends)
    await asyncio.to_thread(clear_sim_log, bench.simulator)
    records = []
    for i, seat in enumerate(seats):
        prompt = make_prompt(
            f"bench-{target.tag}-enter-0-{i:04d}", tps=1000, tokens=2, ttft=0, coalesce=1
        )
        records.append(await one_answer(target.protocol, seat, prompt))
        await asyncio.sleep(0.05)
    facts = await bench.analyse(target.protocol, records)
    samples = [f.enter_to_upstream_ms for f in facts if f.enter_to_upstream_ms is not None]
    return EnterResult(target.who, samples, failed=sum(1 for f in facts if not f.ok))
