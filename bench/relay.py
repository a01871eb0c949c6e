"""``python -m bench.relay``: latency, throughput, bytes and memory of one relay worker.

Starts the upstream simulator and one Daphne worker of the app on loopback (each its own
process, the worker pinned to CPU 0 and the simulator plus this client to CPU 1), drives
streams through real websockets, checks every answer against what the upstream sent, prints
a report and stops everything it started, whatever happens. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from bench.client import make_prompt
from bench.phases import Bench, LevelResult, Pace, tokens_for_chars
from bench.procs import running_servers
from bench.report import BytesResult, Results, render, write_json

HARD_LIMIT_S = 540  # a run that reaches this is stopped (with cleanup) whatever it is doing
PLATEAU_GAIN = 1.05  # a throughput level must beat the best so far by 5% to count as growth


@dataclass(frozen=True)
class Config:
    """What to run; ``--quick`` swaps in a short smoke-test variant."""

    levels: tuple[int, ...] = (1, 200, 500)
    single_rounds: int = 3
    tps: float = 40.0
    tokens: int = 200
    ttft: float = 0.2
    stagger_s: float = 1.0
    throughput_levels: tuple[int, ...] = (50, 100, 150, 200, 300, 400)
    throughput_tps: float = 400.0
    throughput_tokens: int = 1200
    bytes_chars: tuple[int, ...] = (1_000, 10_000)
    bytes_tps: float = 40.0
    profile: bool = False
    profile_level: int = 200
    profile_rate_hz: int = 250
    budget_s: float = 470.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 50 streams, ~1 minute")
    parser.add_argument("--streams", help="concurrency levels for latency, e.g. 1,200,500")
    parser.add_argument("--tokens", type=int, help="answer length of the latency levels (200)")
    parser.add_argument("--tps", type=float, help="tokens/s per stream of the latency levels (40)")
    parser.add_argument("--throughput", help="concurrency levels for the ceiling, e.g. 50,100")
    parser.add_argument("--no-throughput", action="store_true", help="skip the ceiling search")
    parser.add_argument("--no-bytes", action="store_true", help="skip the bytes-per-answer run")
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
        "--keep-files", action="store_true", help="keep the temp DB, worker log and py-spy output"
    )
    return parser.parse_args(argv)


def _levels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def config_from(args: argparse.Namespace) -> Config:
    config = Config()
    if args.quick:
        config = Config(
            levels=(1, 50),
            single_rounds=1,
            throughput_levels=(50, 100),
            throughput_tokens=400,
            bytes_tps=200.0,
            profile_level=50,
            budget_s=100.0,
        )
    levels = _levels(args.streams) or config.levels
    throughput = () if args.no_throughput else _levels(args.throughput) or config.throughput_levels
    profile_level = config.profile_level if config.profile_level in levels else max(levels)
    return Config(
        **{
            **asdict(config),
            "levels": levels,
            "throughput_levels": throughput,
            "bytes_chars": () if args.no_bytes else config.bytes_chars,
            "profile": args.profile,
            "profile_level": profile_level,
            "profile_rate_hz": args.profile_rate,
            "tokens": args.tokens or config.tokens,
            "tps": args.tps or config.tps,
        }
    )


async def latency_levels(bench: Bench, config: Config, results: Results) -> None:
    pace = Pace(tps=config.tps, tokens=config.tokens, ttft=config.ttft)
    for streams in config.levels:
        needed = pace.answer_s * (config.single_rounds if streams == 1 else 1) + streams * 0.03
        if bench.time_left() < needed + 10:
            results.notes.append(f"{streams}-stream level skipped: time budget")
            continue
        profile = None
        if config.profile and streams == config.profile_level:
            profile = (config.profile_rate_hz, 120)  # stopped when the level ends
        rounds = config.single_rounds if streams == 1 else 1
        level = await bench.run_level(
            f"lat{streams}", streams, pace, rounds=rounds, profile=profile
        )
        results.levels.append(level)
        if level.profile is not None:
            results.profile = level.profile
        _progress(level)


async def bytes_phase(bench: Bench, config: Config, results: Results) -> None:
    """One answer per length, run together at the normal pace, no stamps (they'd be text)."""
    if not config.bytes_chars:
        return
    prompts, tokens = [], []
    for i, chars in enumerate(config.bytes_chars):
        marker = f"bench-bytes-0-{i:04d}"
        probe = make_prompt(marker, topic="websocket framing overhead")
        count = tokens_for_chars(probe.text, chars, seed=i)
        tokens.append(count)
        prompts.append(
            make_prompt(
                marker,
                topic="websocket framing overhead",
                tps=config.bytes_tps,
                tokens=count,
                ttft=config.ttft,
                coalesce=1,
                seed=i,
            )
        )
    pace = Pace(tps=config.bytes_tps, tokens=max(tokens), ttft=config.ttft, stamp=False)
    if bench.time_left() < pace.answer_s + 10:
        results.notes.append("bytes phase skipped: time budget")
        return
    level = await bench.run_level("bytes", len(prompts), pace, prompts=prompts)
    results.bytes_pace = f"{config.bytes_tps:g} tok/s, one token per SSE chunk, no stamps"
    for chars, count, facts in zip(config.bytes_chars, tokens, level.facts, strict=True):
        results.bytes.append(
            BytesResult(
                target_chars=chars,
                tokens=count,
                chars=facts.answer_chars,
                answer_bytes=facts.answer_bytes,
                frames=facts.delta_frames + 2,
                ws_bytes=facts.bytes_total,
                turn_bytes=facts.bytes_turn,
                delta_bytes=facts.bytes_deltas,
                final_bytes=facts.bytes_final,
                verdict=facts.verdict,
            )
        )
    print(f"  bytes: {[f'{b.ratio:.2f}' for b in results.bytes]}", file=sys.stderr)


async def throughput_phase(bench: Bench, config: Config, results: Results) -> None:
    """Raise concurrency with a fast upstream until delivered tokens/s stops growing."""
    pace = Pace(tps=config.throughput_tps, tokens=config.throughput_tokens, ttft=config.ttft)
    best = 0.0
    for streams in config.throughput_levels:
        expected = max(pace.answer_s, streams * pace.tokens / best if best else 0.0)
        if bench.time_left() < expected + config.stagger_s + streams * 0.03 + 15:
            results.notes.append(f"throughput level {streams} skipped: time budget")
            break
        level = await bench.run_level(f"tput{streams}", streams, pace)
        results.throughput.append(level)
        _progress(level)
        rate = level.summary.aggregate_tps
        if not math.isnan(rate) and rate < best * PLATEAU_GAIN:
            break
        best = max(best, rate) if not math.isnan(rate) else best


def _progress(level: LevelResult) -> None:
    s = level.summary
    print(
        f"  {level.name}: p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, "
        f"{s.complete}/{s.streams} ok, {s.aggregate_tps:,.0f} tok/s, "
        f"app CPU {level.app_cpu_share * 100:.0f}%, {level.wall_s:.1f} s",
        file=sys.stderr,
    )


async def run(config: Config, results: Results, bench: Bench) -> None:
    await bench.warm_up()
    results.rss_idle_kb = bench.rss_idle_kb
    await latency_levels(bench, config, results)
    await bytes_phase(bench, config, results)
    if config.throughput_levels:
        await throughput_phase(bench, config, results)


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


class HardLimit(Exception):
    """The whole run took longer than HARD_LIMIT_S."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise HardLimit(f"stopped after {HARD_LIMIT_S} s")
    raise KeyboardInterrupt  # SIGTERM, SIGINT: unwind so every process is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # even if started with SIGINT ignored (nohup, &)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(HARD_LIMIT_S)
    started = time.monotonic()
    results: Results | None = None
    status = 0
    try:
        app_env = dict(item.partition("=")[::2] for item in args.app_env)
        with running_servers(app_env, keep_files=args.keep_files) as servers:
            results = Results(config=asdict(config), pinning=servers.pinning)
            results.revision = app_revision() + "".join(f"; {k}={v}" for k, v in app_env.items())
            bench = Bench(servers, started + config.budget_s, config.stagger_s)
            print(f"servers up (app pid {servers.app_pid}); running...", file=sys.stderr)
            try:
                asyncio.run(run(config, results, bench))
            except (HardLimit, KeyboardInterrupt) as exc:
                results.notes.append(f"run interrupted: {type(exc).__name__} {exc}")
                status = 130
            results.app_log_problems = servers.app_errors()
            if args.keep_files:
                results.notes.append(f"files kept in {servers.workdir}")
    finally:
        signal.alarm(0)
    if results is not None:
        results.notes.append(f"total run time {time.monotonic() - started:.0f} s")
        print(render(results))
        if args.json:
            write_json(results, args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
