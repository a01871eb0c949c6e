"""The run of ``bench.relay``: its phases in order, each on the app then on the baseline.

The order matters: the stuck reader runs before the big levels (CPython keeps the memory a
level frees, and a phase reusing it would show no RSS growth whatever it kept), and each
latency level runs on the app and then on the baseline a few seconds apart, so both see the
same machine. Each phase appends to the run's ``Results`` and prints a progress line.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass

from bench.client import Prompt, make_prompt
from bench.phase_bytes import tokens_for_chars
from bench.phase_enter import enter_to_upstream
from bench.phase_stuck import StuckPlan, stuck_reader
from bench.phase_types import LevelResult, Pace, Target
from bench.phases import Bench
from bench.procs import clear_sim_log
from bench.relay_config import Config
from bench.report_results import BytesResult, Results

PLATEAU_GAIN = 1.05  # a throughput level must beat the best so far by 5% to count as growth


@dataclass
class Run:
    """The bench, both servers under test and what has been measured so far."""

    bench: Bench
    app: Target
    base: Target
    config: Config
    results: Results


async def latency_levels(run: Run) -> None:
    """Each level against the app, then against the baseline, a few seconds apart."""
    config, bench, results = run.config, run.bench, run.results
    pace = Pace(tps=config.tps, tokens=config.tokens, ttft=config.ttft)
    for streams in config.levels:
        rounds = config.single_rounds if streams == 1 else 1
        needed = 2 * (pace.answer_s * rounds + streams * 0.03)
        if bench.time_left() < needed + 10:
            results.notes.append(f"{streams}-stream level skipped: time budget")
            continue
        profile = None
        if config.profile and streams == config.profile_level:
            profile = (config.profile_rate_hz, 120)  # stopped when the level ends
        name = f"lat{streams}"
        level = await bench.run_level(run.app, name, streams, pace, rounds=rounds, profile=profile)
        results.levels.append(level)
        if level.profile is not None:
            results.profile = level.profile
        _progress(level)
        base = await bench.run_level(run.base, name, streams, pace, rounds=rounds)
        results.base_levels.append(base)
        _progress(base)


def bytes_prompts(tag: str, config: Config) -> list[tuple[int, Prompt]]:
    """Per answer length: the tokens that make this prompt's answer that long, and the prompt
    (the simulator's text depends on the prompt, so each server's is sized on its own)."""
    out = []
    for i, chars in enumerate(config.bytes_chars):
        marker = f"bench-{tag}-bytes-0-{i:04d}"
        probe = make_prompt(marker, topic="websocket framing overhead")
        count = tokens_for_chars(probe.text, chars, seed=i)
        options = {"tps": config.bytes_tps, "tokens": count, "ttft": config.ttft}
        prompt = make_prompt(
            marker, topic="websocket framing overhead", **options, coalesce=1, seed=i
        )
        out.append((count, prompt))
    return out


async def bytes_phase(run: Run) -> None:
    """One answer per length at the normal pace, no stamps (they'd be text); the app and the
    baseline at once (a handful of streams: bytes hardly depend on timing). Each answer has a
    socket of its own that offers permessage-deflate as a browser does: its payload bytes and
    its TCP bytes (the wire) are both reported, with the compression the server accepted."""
    config, bench, results = run.config, run.bench, run.results
    if not config.bytes_chars:
        return
    plans = {target.tag: bytes_prompts(target.tag, config) for target in (run.app, run.base)}
    longest = max(count for plan in plans.values() for count, _ in plan)
    pace = Pace(tps=config.bytes_tps, tokens=longest, ttft=config.ttft, stamp=False)
    if bench.time_left() < pace.answer_s + 10:
        results.notes.append("bytes phase skipped: time budget")
        return
    await asyncio.to_thread(clear_sim_log, bench.simulator)
    levels = await asyncio.gather(
        *(
            bench.run_level(
                target,
                "bytes",
                len(config.bytes_chars),
                pace,
                prompts=[prompt for _, prompt in plans[target.tag]],
                clear_log=False,
                wire=True,
            )
            for target in (run.app, run.base)
        )
    )
    results.bytes_pace = f"{config.bytes_tps:g} tok/s, one token per SSE chunk, no stamps"
    results.bytes_tps = config.bytes_tps
    outs = (results.bytes, results.base_bytes)
    for target, level, out in zip((run.app, run.base), levels, outs, strict=True):
        counts = [count for count, _ in plans[target.tag]]
        for chars, count, facts in zip(config.bytes_chars, counts, level.facts, strict=True):
            out.append(
                BytesResult(
                    target_chars=chars,
                    tokens=count,
                    chars=facts.answer_chars,
                    answer_bytes=facts.answer_bytes,
                    frames=facts.frames,
                    payload_bytes=facts.bytes_total,
                    wire_bytes=facts.wire_bytes,
                    extensions=facts.extensions,
                    turn_bytes=facts.bytes_turn,
                    delta_bytes=facts.bytes_deltas,
                    final_bytes=facts.bytes_final,
                    verdict=facts.verdict,
                )
            )
    for who, answers in (("app", results.bytes), ("baseline", results.base_bytes)):
        figures = ", ".join(
            f"{b.payload_ratio:.2f} payload / {b.wire_ratio:.2f} wire" for b in answers
        )
        compression = ", ".join(sorted({b.compression for b in answers}))
        print(f"  {who} bytes per answer byte: {figures} ({compression})", file=sys.stderr)


async def throughput_phase(run: Run, target: Target, out: list[LevelResult]) -> None:
    """Raise concurrency with a fast upstream until delivered tokens/s stops growing."""
    config, bench = run.config, run.bench
    pace = Pace(tps=config.throughput_tps, tokens=config.throughput_tokens, ttft=config.ttft)
    best = 0.0
    for streams in config.throughput_levels:
        expected = max(pace.answer_s, streams * pace.tokens / best if best else 0.0)
        if bench.time_left() < expected + config.stagger_s + streams * 0.03 + 15:
            run.results.notes.append(f"{target.who} throughput level {streams} skipped: time")
            break
        level = await bench.run_level(target, f"tput{streams}", streams, pace)
        out.append(level)
        _progress(level)
        rate = level.summary.aggregate_tps
        if not math.isnan(rate) and rate < best * PLATEAU_GAIN:
            break
        best = max(best, rate) if not math.isnan(rate) else best


async def stuck_phase(run: Run) -> None:
    """N answers alone and beside a socket that stopped reading, on the app then the baseline."""
    config, bench = run.config, run.bench
    pace = Pace(tps=config.tps, tokens=config.tokens, ttft=config.ttft)
    plan = stuck_plan(config, pace)
    for target in (run.app, run.base):
        if bench.time_left() < 3 * pace.answer_s + config.stuck_fill_s + 30:
            run.results.notes.append(f"{target.who} stuck-reader phase skipped: time budget")
            return
        result = await stuck_reader(bench, target, config.stuck_streams, pace, plan)
        run.results.stuck.append(result)
        print(
            f"  {target.who} stuck reader: p99 {result.clean.summary.p99_ms:.1f} -> "
            f"{result.stuck.summary.p99_ms:.1f} ms, RSS +{result.rss_growth_mb:.1f} MB; "
            f"{result.fill}; {result.fate}; {result.upstream}",
            file=sys.stderr,
        )


def stuck_plan(config: Config, pace: Pace) -> StuckPlan:
    """Fast answers to fill the kernel, then one long answer that lasts the measured phase."""
    phase_s = pace.answer_s + config.stagger_s + 2.0
    long_sim = {
        "tokens": max(100, int(config.stuck_long_tps * phase_s)),
        "tps": config.stuck_long_tps,
        "ttft": 0,
        "seed": 2,
    }
    return StuckPlan(config.stuck_fill_sim, long_sim, config.stuck_fill_s, config.stuck_fill_min)


async def enter_phase(run: Run) -> None:
    """Enter -> upstream request on the idle app, then on the idle baseline."""
    if run.config.enter_sends <= 0:
        return
    for target in (run.app, run.base):
        result = await enter_to_upstream(run.bench, target, run.config.enter_sends)
        run.results.enter.append(result)
        print(f"  {target.who} Enter -> upstream: p50 {result.p50_ms:.1f} ms", file=sys.stderr)


def _progress(level: LevelResult) -> None:
    """One line per level on stderr, so a long run shows it is alive and how it goes."""
    s = level.summary
    print(
        f"  {level.who} {level.name}: p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, "
        f"{s.complete}/{s.streams} ok, {s.aggregate_tps:,.0f} tok/s, "
        f"CPU {level.app_cpu_share * 100:.0f}%, {level.wall_s:.1f} s",
        file=sys.stderr,
    )


async def warm_up(run: Run) -> None:
    """Both servers answer once before anything is measured; a failure here means the bench
    cannot speak to a server (a protocol change, a crash), which must not pass as figures."""
    for target in (run.app, run.base):
        await run.bench.warm_up(target)
    run.results.rss_idle_kb = run.app.rss_idle_kb
    run.results.base_rss_idle_kb = run.base.rss_idle_kb


async def measure(run: Run) -> None:
    """Every phase in its order (see the module docstring for why this one)."""
    await warm_up(run)
    await enter_phase(run)
    # Before the big levels: CPython keeps the memory they free, and a later phase reusing it
    # would show no RSS growth whatever it kept.
    if run.config.stuck:
        await stuck_phase(run)
    await latency_levels(run)
    await bytes_phase(run)
    for target, out in ((run.app, run.results.throughput), (run.base, run.results.base_throughput)):
        await throughput_phase(run, target, out)
