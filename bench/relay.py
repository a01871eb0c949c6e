"""``python -m bench.relay``: latency, throughput, bytes and memory of one relay worker, each
against the baseline relay measured in the same run.

Starts the upstream simulator, one Daphne worker of the app and the baseline relay
(``bench.baseline``) on loopback (each its own process; the app and the baseline pinned to
CPU 0, where they take turns, the simulator plus this client to CPU 1), drives the same
streams through real websockets to each, checks every answer against what the upstream sent,
prints a report (app / baseline and their ratio) and stops everything it started, whatever
happens. ``--smoke`` runs every phase briefly (for CI): it never fails on a target, only when
the bench cannot start, crashes or measures nothing. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.client import AppProtocol, BaselineProtocol, Prompt, make_prompt
from bench.phases import Bench, LevelResult, Pace, StuckPlan, Target, tokens_for_chars
from bench.procs import HardLimit, Servers, clear_sim_log, hard_limit, running_servers
from bench.report import BytesResult, Results, render, write_json

PLATEAU_GAIN = 1.05  # a throughput level must beat the best so far by 5% to count as growth


@dataclass(frozen=True)
class Config:
    """What to run; ``--quick`` and ``--smoke`` swap in shorter variants."""

    levels: tuple[int, ...] = (1, 100, 200, 500)
    single_rounds: int = 3
    tps: float = 40.0
    tokens: int = 200
    ttft: float = 0.2
    stagger_s: float = 1.0
    throughput_levels: tuple[int, ...] = (50, 100, 150, 200, 300, 400)
    throughput_tps: float = 400.0
    throughput_tokens: int = 600
    bytes_chars: tuple[int, ...] = (1_000, 10_000)
    bytes_tps: float = 40.0
    stuck: bool = True
    stuck_streams: int = 50
    stuck_fill_sim: dict[str, Any] = field(
        default_factory=lambda: {"tokens": 20000, "tps": 20000, "ttft": 0, "seed": 1}
    )
    stuck_fill_s: float = 10.0
    stuck_fill_min: int = 4
    stuck_long_tps: float = 1000.0
    enter_sends: int = 20
    profile: bool = False
    profile_level: int = 200
    profile_rate_hz: int = 250
    budget_s: float = 600.0
    hard_limit_s: int = 720
    smoke: bool = False


QUICK = Config(
    levels=(1, 50),
    single_rounds=1,
    throughput_levels=(50, 100),
    throughput_tokens=400,
    bytes_chars=(1_000,),
    stuck_fill_s=6.0,
    stuck_fill_min=3,
    enter_sends=10,
    profile_level=50,
    budget_s=150.0,
    hard_limit_s=240,
)
SMOKE = Config(
    levels=(1, 10),
    single_rounds=1,
    tokens=40,
    throughput_levels=(10,),
    throughput_tokens=200,
    bytes_chars=(1_000,),
    stuck_streams=10,
    stuck_fill_sim={"tokens": 5000, "tps": 10000, "ttft": 0, "seed": 1},
    stuck_fill_s=3.0,
    stuck_fill_min=2,
    enter_sends=5,
    profile_level=10,
    budget_s=75.0,
    hard_limit_s=150,
    smoke=True,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 and 50 streams, ~2 minutes")
    mode.add_argument(
        "--smoke", action="store_true", help="every phase briefly (~1 minute); never fails a target"
    )
    parser.add_argument("--streams", help="concurrency levels for latency, e.g. 1,100,200,500")
    parser.add_argument("--tokens", type=int, help="answer length of the latency levels (200)")
    parser.add_argument("--tps", type=float, help="tokens/s per stream of the latency levels (40)")
    parser.add_argument("--throughput", help="concurrency levels for the ceiling, e.g. 50,100")
    parser.add_argument("--no-throughput", action="store_true", help="skip the ceiling search")
    parser.add_argument("--no-bytes", action="store_true", help="skip the bytes-per-answer run")
    parser.add_argument(
        "--stuck-reader",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the stuck-reader phase (on by default)",
    )
    parser.add_argument(
        "--enter", type=int, help="sequential sends timed for Enter -> upstream (20; 0 = skip)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the worker (200 streams)")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the worker, e.g. STREAM_FRAME_INTERVAL_MS=10 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--keep-files", action="store_true", help="keep the temp DB, logs and py-spy output"
    )
    return parser.parse_args(argv)


def _levels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def config_from(args: argparse.Namespace) -> Config:
    config = SMOKE if args.smoke else QUICK if args.quick else Config()
    levels = _levels(args.streams) or config.levels
    throughput = () if args.no_throughput else _levels(args.throughput) or config.throughput_levels
    profile_level = config.profile_level if config.profile_level in levels else max(levels)
    return Config(
        **{
            **asdict(config),
            "levels": levels,
            "throughput_levels": throughput,
            "bytes_chars": () if args.no_bytes else config.bytes_chars,
            "stuck": args.stuck_reader,
            "enter_sends": config.enter_sends if args.enter is None else args.enter,
            "profile": args.profile,
            "profile_level": profile_level,
            "profile_rate_hz": args.profile_rate,
            "tokens": args.tokens or config.tokens,
            "tps": args.tps or config.tps,
        }
    )


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
        result = await bench.stuck_reader(target, config.stuck_streams, pace, plan)
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
        result = await run.bench.enter_to_upstream(target, run.config.enter_sends)
        run.results.enter.append(result)
        print(f"  {target.who} Enter -> upstream: p50 {result.p50_ms:.1f} ms", file=sys.stderr)


def _progress(level: LevelResult) -> None:
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


def app_revision() -> str:
    """The commit under test, and which app files differ from it (others edit them live)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "chat", "chatsite", "templates", "simulator")
    files = [line.split(maxsplit=1)[-1] for line in dirty.splitlines() if line.strip()]
    return head + (f" + uncommitted changes in {', '.join(files)}" if files else "")


def _targets(servers: Servers) -> tuple[Target, Target]:
    app = Target("app", "app", AppProtocol([servers.app]), [servers.app_process.pid])
    base = Target(
        "baseline", "base", BaselineProtocol(servers.baseline.port), [servers.baseline_process.pid]
    )
    return app, base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    started = time.monotonic()
    results: Results | None = None
    status = 0
    connections = max((*config.levels, *config.throughput_levels, config.stuck_streams)) + 20
    with hard_limit(config.hard_limit_s):
        try:
            app_env = dict(item.partition("=")[::2] for item in args.app_env)
            with running_servers(
                app_env, connections=connections, keep_files=args.keep_files
            ) as servers:
                results = Results(config=asdict(config), pinning=servers.pinning)
                results.revision = app_revision() + "".join(
                    f"; {k}={v}" for k, v in app_env.items()
                )
                bench = Bench(
                    servers.simulator,
                    servers.sim_process.pid,
                    started + config.budget_s,
                    config.stagger_s,
                    servers.workdir,
                )
                app, base = _targets(servers)
                print(
                    f"servers up (app pid {servers.app_process.pid}, baseline pid "
                    f"{servers.baseline_process.pid}); running...",
                    file=sys.stderr,
                )
                try:
                    asyncio.run(measure(Run(bench, app, base, config, results)))
                except (HardLimit, KeyboardInterrupt) as exc:
                    results.notes.append(f"run interrupted: {type(exc).__name__} {exc}")
                    status = 130
                except Exception:
                    results.notes.append("the bench crashed:\n" + traceback.format_exc())
                    status = 1
                results.app_log_problems = servers.app_errors()
                results.baseline_log_problems = servers.baseline_errors()
                if args.keep_files:
                    results.notes.append(f"files kept in {servers.workdir}")
        except (HardLimit, KeyboardInterrupt) as exc:
            print(f"bench.relay: interrupted while starting: {exc!r}", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            print("bench.relay: the servers could not be started", file=sys.stderr)
            return 1
    if results is None:
        return 1
    results.notes.append(f"total run time {time.monotonic() - started:.0f} s")
    print(render(results))
    if args.json:
        write_json(results, args.json)
    if status == 0 and (broken := results.broken()):
        print("bench.relay: the bench measured nothing in places: " + "; ".join(broken))
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
