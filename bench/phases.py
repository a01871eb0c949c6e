"""The measurements: each phase drives streams through the running servers and returns figures.

A phase gets fresh conversations in a fresh session, so no phase inherits another's context
(the upstream request carries the whole conversation) or a sidebar that grows with every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.analysis import LevelSummary, StreamFacts, analyse_stream, by_marker, summarise
from bench.client import Prompt, StreamRecord, create_seats, make_prompt, run_streams
from bench.procs import CpuWindow, Servers, reset_peak_rss, rss_kb
from bench.profile import Profile, Sampler
from simulator.script import SimOptions, plan_answer

MODEL = "qwen-plus"  # settings.LLM_MODELS[0], what a new conversation uses
RSS_EVERY_S = 0.1


@dataclass(frozen=True)
class Pace:
    """How the upstream streams each answer of a phase."""

    tps: float
    tokens: int
    ttft: float = 0.2
    stamp: bool = True

    def sim_options(self, seed: int) -> dict[str, object]:
        options: dict[str, object] = {"tps": self.tps, "tokens": self.tokens, "ttft": self.ttft}
        options.update(coalesce=1, seed=seed)
        if self.stamp:
            options["stamp"] = 1
        return options

    @property
    def answer_s(self) -> float:
        return self.ttft + self.tokens / self.tps


@dataclass
class LevelResult:
    """One run of N concurrent streams: the pooled figures plus what each process used."""

    name: str
    streams: int
    pace: Pace
    summary: LevelSummary
    cpu: dict[str, float]
    rss_idle_kb: int
    rss_before_kb: int
    rss_peak_kb: int
    rss_hwm_kb: int
    wall_s: float
    facts: list[StreamFacts] = field(default_factory=list, repr=False)
    profile: Profile | None = None

    @property
    def app_cpu_share(self) -> float:
        return self.cpu.get("app_cpu_s", 0.0) / max(self.cpu.get("wall_s", 1.0), 1e-9)

    @property
    def app_us_per_token(self) -> float:
        tokens = sum(f.tokens for f in self.facts)
        return self.cpu.get("app_cpu_s", 0.0) / tokens * 1e6 if tokens else math.nan

    @property
    def app_us_per_frame(self) -> float:
        frames = sum(f.delta_frames for f in self.facts)
        return self.cpu.get("app_cpu_s", 0.0) / frames * 1e6 if frames else math.nan

    @property
    def rss_per_stream_kb(self) -> float:
        return (self.rss_hwm_kb - self.rss_idle_kb) / self.streams if self.streams else math.nan


class Bench:
    """Shared state of one benchmark run: the servers, the idle RSS, a deadline."""

    def __init__(self, servers: Servers, deadline: float, stagger_s: float) -> None:
        self.servers = servers
        self.deadline = deadline
        self.stagger_s = stagger_s
        self.rss_idle_kb = 0
        self.notes: list[str] = []

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    async def warm_up(self) -> None:
        """One short answer so imports, the HTTP pool and templates are hot; then idle RSS."""
        await self.run_level("warm-up", 1, Pace(tps=200, tokens=20))
        await asyncio.sleep(0.5)
        self.rss_idle_kb = rss_kb(self.servers.app_pid)[0]

    async def run_level(
        self,
        name: str,
        streams: int,
        pace: Pace,
        *,
        rounds: int = 1,
        profile: tuple[int, int] | None = None,
        prompts: Sequence[Prompt] | None = None,
    ) -> LevelResult:
        """N concurrent streams (``rounds`` times in a row, pooled); ``profile`` = (Hz, s)."""
        seats = await asyncio.to_thread(create_seats, self.servers.app, streams * rounds)
        self.servers.clear_sim_log()
        batches = [
            (
                seats[r * streams : (r + 1) * streams],
                list(prompts) if prompts else self._prompts(name, r, streams, pace),
            )
            for r in range(rounds)
        ]
        watch = LevelWatch(self.servers)
        spy = self._sampler(name, profile)
        records: list[StreamRecord] = []
        try:
            for chunk, batch in batches:
                records += await run_streams(
                    chunk,
                    batch,
                    stagger_s=self.stagger_s if streams > 1 else 0.0,
                    timeout_s=min(max(60.0, pace.answer_s * 10), max(self.time_left(), 10.0)),
                    on_start=_starter(spy),
                )
        finally:
            sampled = await asyncio.to_thread(spy.finish) if spy is not None else None
        await watch.stop()
        log = by_marker(await asyncio.to_thread(self.servers.simulator.requests))
        facts = [analyse_stream(r, log.get(r.marker)) for r in records]
        return LevelResult(
            name=name,
            streams=streams,
            pace=pace,
            summary=summarise(facts, offered_tps=streams * pace.tps),
            cpu=watch.cpu,
            rss_idle_kb=self.rss_idle_kb,
            rss_before_kb=watch.rss_before_kb,
            rss_peak_kb=watch.rss_peak_kb,
            rss_hwm_kb=watch.rss_hwm_kb,
            wall_s=watch.wall_s,
            facts=facts,
            profile=sampled,
        )

    def _prompts(self, name: str, round_no: int, streams: int, pace: Pace) -> list[Prompt]:
        return [
            make_prompt(f"bench-{name}-{round_no}-{i:04d}", **pace.sim_options(seed=i))
            for i in range(streams)
        ]

    def _sampler(self, name: str, profile: tuple[int, int] | None) -> Sampler | None:
        if profile is None:
            return None
        rate, seconds = profile
        out = self.servers.workdir / f"py-spy-{name}.txt"
        return Sampler(self.servers.app_pid, out, rate, seconds)


def _starter(spy: Sampler | None) -> Callable[[], Awaitable[None]] | None:
    if spy is None:
        return None

    async def start() -> None:
        if spy.process is None:
            spy.start()
            await asyncio.sleep(0.2)  # let py-spy attach before the first message goes

    return start


class LevelWatch:
    """CPU and memory of the processes over one level (started at construction)."""

    def __init__(self, servers: Servers) -> None:
        self.pid = servers.app_pid
        self.rss_before_kb = rss_kb(self.pid)[0]
        reset_peak_rss(self.pid)
        self.window = CpuWindow(servers.pids)
        self.sampler = RssSampler(self.pid)
        self.task = asyncio.create_task(self.sampler.run())
        self.started = time.monotonic()
        self.cpu: dict[str, float] = {}
        self.wall_s = 0.0
        self.rss_peak_kb = 0
        self.rss_hwm_kb = 0

    async def stop(self) -> None:
        self.wall_s = time.monotonic() - self.started
        self.cpu = self.window.finish()
        self.sampler.stop()
        await self.task
        self.rss_peak_kb = self.sampler.peak_kb
        self.rss_hwm_kb = max(rss_kb(self.pid)[1], self.rss_peak_kb)


class RssSampler:
    """Polls the worker's VmRSS while a level runs (VmHWM gives the exact peak as well)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid)[0])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RSS_EVERY_S)

    def stop(self) -> None:
        self._stop.set()


def tokens_for_chars(prompt_text: str, target_chars: int, seed: int = 0) -> int:
    """How many tokens make the simulator's answer to this prompt about ``target_chars`` long.

    The simulator's text is a pure function of the prompt and options (``plan_answer``), so
    the length can be computed here instead of guessed from an average token size.
    """
    messages = [{"role": "user", "content": prompt_text}]

    def length(tokens: int) -> int:
        return len("".join(plan_answer(MODEL, messages, SimOptions(tokens=tokens, seed=seed))))

    low, high = 1, 20_000
    while low < high:
        mid = (low + high) // 2
        if length(mid) < target_chars:
            low = mid + 1
        else:
            high = mid
    return low
