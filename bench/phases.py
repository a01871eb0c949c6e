"""The measurements: each phase drives streams through one server under test and returns figures.

A server under test is a ``Target``: the app (one worker or several) or the baseline relay,
with the protocol the load client speaks to it and the processes to watch. Every phase runs the
same way against either, so the app's figures can be divided by the baseline's. A phase gets
fresh conversations in fresh sessions, so no phase inherits another's context (the upstream
request carries the whole conversation) or a sidebar that grows with every test.

This module holds the run's shared state (``Bench``) and the phase every other builds on: N
concurrent streams, a *level* (the warm-up is one too). The other phases are in their own
modules: ``bench.phase_enter`` (Enter -> upstream), ``bench.phase_stuck`` (the stuck reader),
``bench.phase_bytes`` (answers sized for the bytes figure); their inputs and the level's result
are in ``bench.phase_types``, the CPU and memory watch in ``bench.phase_watch``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.analysis import StreamFacts, analyse_stream, by_marker
from bench.analysis import summarise as summarise_facts
from bench.client import Prompt, StreamProtocol, StreamRecord, make_prompt, run_streams
from bench.phase_types import LevelResult, Pace, Target
from bench.phase_watch import LevelWatch
from bench.procs import clear_sim_log, rss_kb
from bench.profile import Sampler
from tests.support.simulator import Simulator


class Bench:
    """Shared state of one benchmark run: the simulator, a deadline, the level pacing."""

    def __init__(
        self,
        simulator: Simulator,
        sim_pid: int,
        deadline: float,
        stagger_s: float,
        workdir: Path,
    ) -> None:
        self.simulator = simulator
        self.sim_pid = sim_pid
        self.deadline = deadline
        self.stagger_s = stagger_s
        self.workdir = workdir

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    async def warm_up(self, target: Target) -> None:
        """One short answer so imports, the HTTP pool and templates are hot; then idle RSS.

        A failure here means the bench cannot speak to the server (its protocol changed, it
        crashed), which must stop the run rather than pass as figures.
        """
        level = await self.run_level(target, "warm-up", 1, Pace(tps=200, tokens=20))
        if level.summary.complete != 1:
            verdicts = [f.verdict for f in level.facts]
            raise RuntimeError(f"the {target.who} did not answer a warm-up prompt: {verdicts}")
        await asyncio.sleep(0.5)
        target.rss_idle_kb = sum(rss_kb(pid)[0] for pid in target.pids)

    async def run_level(
        self,
        target: Target,
        name: str,
        streams: int,
        pace: Pace,
        *,
        rounds: int = 1,
        profile: tuple[int, int] | None = None,
        prompts: Sequence[Prompt] | None = None,
        clear_log: bool = True,
        on_start: Callable[[], Awaitable[None]] | None = None,
        wire: bool = False,
    ) -> LevelResult:
        """N concurrent streams (``rounds`` times in a row, pooled); ``profile`` = (Hz, s);
        ``wire``: offer permessage-deflate and count each answer's TCP bytes (``run_streams``)."""
        protocol = target.protocol
        seats = await asyncio.to_thread(protocol.prepare, streams * rounds)
        if clear_log:
            await asyncio.to_thread(clear_sim_log, self.simulator)
        batches = [
            (
                seats[r * streams : (r + 1) * streams],
                list(prompts) if prompts else self._prompts(target, name, r, streams, pace),
            )
            for r in range(rounds)
        ]
        watch = LevelWatch(target, self.sim_pid)
        spy = self._sampler(target, name, profile)
        records: list[StreamRecord] = []
        try:
            for chunk, batch in batches:
                records += await run_streams(
                    protocol,
                    chunk,
                    batch,
                    stagger_s=self.stagger_s if streams > 1 else 0.0,
                    timeout_s=min(max(60.0, pace.answer_s * 10), max(self.time_left(), 10.0)),
                    on_start=_starter(spy, on_start),
                    wire=wire,
                )
        finally:
            sampled = await asyncio.to_thread(spy.finish) if spy is not None else None
        await watch.stop()
        facts = await self.analyse(protocol, records)
        return LevelResult(
            name=name,
            who=target.who,
            streams=streams,
            pace=pace,
            summary=summarise_facts(facts, offered_tps=streams * pace.tps),
            cpu=watch.cpu,
            rss_idle_kb=target.rss_idle_kb,
            rss_before_kb=watch.rss_before_kb,
            rss_peak_kb=watch.rss_peak_kb,
            rss_hwm_kb=watch.rss_hwm_kb,
            wall_s=watch.wall_s,
            facts=facts,
            profile=sampled,
        )

    async def analyse(
        self, protocol: StreamProtocol, records: Sequence[StreamRecord]
    ) -> list[StreamFacts]:
        """Check each record against the simulator's log of what it sent."""
        log = by_marker(await asyncio.to_thread(self.simulator.requests))
        return [analyse_stream(r, protocol.parse(r), log.get(r.marker)) for r in records]

    def _prompts(
        self, target: Target, name: str, round_no: int, streams: int, pace: Pace
    ) -> list[Prompt]:
        return [
            make_prompt(f"bench-{target.tag}-{name}-{round_no}-{i:04d}", **pace.sim_options(i))
            for i in range(streams)
        ]

    def _sampler(
        self, target: Target, name: str, profile: tuple[int, int] | None
    ) -> Sampler | None:
        if profile is None:
            return None
        rate, seconds = profile
        out = self.workdir / f"py-spy-{target.tag}-{name}.txt"
        return Sampler(target.pids[0], out, rate, seconds)


def _starter(
    spy: Sampler | None, then: Callable[[], Awaitable[None]] | None
) -> Callable[[], Awaitable[None]] | None:
    """``then`` behind starting py-spy, so the sampler attaches once the sockets are open."""
    if spy is None:
        return then

    async def start() -> None:
        if spy.process is None:
            spy.start()
            await asyncio.sleep(0.2)  # let py-spy attach before the first message goes
        if then is not None:
            await then()

    return start
