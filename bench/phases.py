"""The measurements: each phase drives streams through one server under test and returns figures.

A server under test is a ``Target``: the app (one worker or several) or the baseline relay,
with the protocol the load client speaks to it and the processes to watch. Every phase runs the
same way against either, so the app's figures can be divided by the baseline's. A phase gets
fresh conversations in fresh sessions, so no phase inherits another's context (the upstream
request carries the whole conversation) or a sidebar that grows with every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from bench.analysis import LevelSummary, StreamFacts, analyse_stream, by_marker, percentile
from bench.analysis import summarise as summarise_facts
from bench.client import (
    Prompt,
    StreamProtocol,
    StreamRecord,
    make_prompt,
    one_answer,
    run_streams,
)
from bench.procs import CpuWindow, clear_sim_log, kernel_unsent, reset_peak_rss, rss_kb
from bench.profile import Profile, Sampler
from simulator.script import SimOptions, plan_answer
from tests.support.simulator import Simulator

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
class Target:
    """One server under test: a label, a marker-safe tag, its protocol and its processes."""

    who: str
    tag: str
    protocol: StreamProtocol
    pids: list[int]
    rss_idle_kb: int = 0


@dataclass
class LevelResult:
    """One run of N concurrent streams: the pooled figures plus what each process used."""

    name: str
    who: str
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
        """CPU of the server under test over the level, in cores (1.0 = one core busy)."""
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

    @property
    def all_tokens_delivered(self) -> bool:
        """Every answer complete and every token the upstream sent received."""
        s = self.summary
        sent = sum(f.upstream_tokens for f in self.facts)
        return s.complete == s.streams and sum(f.tokens for f in self.facts) == sent


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

    async def stuck_reader(
        self, target: Target, streams: int, pace: Pace, stuck: StuckPlan
    ) -> StuckResult:
        """``streams`` answers alone, then again beside one socket that stopped reading.

        A first, unreported run settles the server at this load (its first concurrent level
        pays for growing its heap and caches), so that the two measured runs differ only by
        the stuck socket, in latency and in memory.
        """
        await self.run_level(target, f"settle{streams}", streams, pace)
        clean = await self.run_level(target, f"clean{streams}", streams, pace)
        seat = (await asyncio.to_thread(target.protocol.prepare, 1))[0]
        marker = f"bench-{target.tag}-stuck-0"
        reader = StuckReader(target.protocol, seat, marker, stuck)
        try:
            level = await self.run_level(
                target, f"stuck{streams}", streams, pace, on_start=reader.start
            )
        finally:
            await reader.finish(drain_s=5.0)
        entry = await self._wait_upstream_done(f"{marker}-long", timeout_s=30.0)
        upstream = "the upstream never saw the long answer's request"
        if entry is not None:
            took = (entry.get("finished_at") or time.time()) - entry.get("started_at", 0.0)
            upstream = (
                f"the long answer: {entry.get('tokens_sent', 0)} tokens sent in {took:.1f} s, "
                f"{entry.get('outcome')}"
            )
        return StuckResult(target.who, clean, level, reader.fill, reader.fate, upstream)

    async def _wait_upstream_done(self, marker: str, timeout_s: float) -> dict[str, Any] | None:
        """Let a long upstream answer end before the next phase, so it cannot load that one;
        its log entry (None if the upstream never saw the request)."""
        deadline = time.monotonic() + min(timeout_s, max(self.time_left(), 1.0))
        while True:
            entry = by_marker(await asyncio.to_thread(self.simulator.requests)).get(marker)
            if entry is None or entry.get("outcome") != "streaming":
                return entry
            if time.monotonic() >= deadline:
                return entry
            await asyncio.sleep(0.25)

    async def enter_to_upstream(self, target: Target, sends: int) -> EnterResult:
        """``sends`` messages one after another on an idle server, each on a socket opened
        beforehand: how long from the client's send to the upstream request's arrival."""
        seats = await asyncio.to_thread(target.protocol.prepare, sends)
        await asyncio.to_thread(clear_sim_log, self.simulator)
        records = []
        for i, seat in enumerate(seats):
            prompt = make_prompt(
                f"bench-{target.tag}-enter-0-{i:04d}", tps=1000, tokens=2, ttft=0, coalesce=1
            )
            records.append(await one_answer(target.protocol, seat, prompt))
            await asyncio.sleep(0.05)
        facts = await self.analyse(target.protocol, records)
        samples = [f.enter_to_upstream_ms for f in facts if f.enter_to_upstream_ms is not None]
        return EnterResult(target.who, samples, failed=sum(1 for f in facts if not f.ok))

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


def _starter(
    spy: Sampler | None, then: Callable[[], Awaitable[None]] | None
) -> Callable[[], Awaitable[None]] | None:
    if spy is None:
        return then

    async def start() -> None:
        if spy.process is None:
            spy.start()
            await asyncio.sleep(0.2)  # let py-spy attach before the first message goes
        if then is not None:
            await then()

    return start


class LevelWatch:
    """CPU and memory of the target's processes over one level (started at construction)."""

    def __init__(self, target: Target, sim_pid: int) -> None:
        self.pids = list(target.pids)
        self.rss_before_kb = self._rss()
        for pid in self.pids:
            reset_peak_rss(pid)
        names = {f"app{i}": pid for i, pid in enumerate(self.pids)}
        self.window = CpuWindow({**names, "sim": sim_pid})
        self.sampler = RssSampler(self.pids)
        self.task = asyncio.create_task(self.sampler.run())
        self.started = time.monotonic()
        self.cpu: dict[str, float] = {}
        self.wall_s = 0.0
        self.rss_peak_kb = 0
        self.rss_hwm_kb = 0

    def _rss(self) -> int:
        return sum(rss_kb(pid)[0] for pid in self.pids)

    async def stop(self) -> None:
        self.wall_s = time.monotonic() - self.started
        self.cpu = self.window.finish()
        self.cpu["app_cpu_s"] = sum(self.cpu.pop(f"app{i}_cpu_s") for i in range(len(self.pids)))
        self.sampler.stop()
        await self.task
        self.rss_peak_kb = self.sampler.peak_kb
        hwm = sum(rss_kb(pid)[1] for pid in self.pids)
        self.rss_hwm_kb = max(hwm, self.rss_peak_kb)


class RssSampler:
    """Polls the processes' VmRSS while a level runs (VmHWM gives the exact peak as well)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak_kb = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(rss_kb(pid)[0] for pid in self.pids))
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
