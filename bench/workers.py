"""``python -m bench.workers`` (``make bench-workers``): what the Redis channel layer and a second
worker change, each configuration against the baseline relay measured in the same run.

One simulator, then in turn: the baseline relay (``bench.baseline``); one Daphne worker of the
app on the in-process layer (no ``REDIS_URL``); one worker on Redis; two workers on Redis. The
app's configurations share nothing but the server: each gets a fresh database (PostgreSQL, as a
team deploys it, or SQLite with ``--database sqlite``) and a flushed Redis database. Each runs
the same latency levels (40 tokens/s, relay-added latency per token as ``bench.relay``
measures it), a saturation search (a fast upstream, rising concurrency until delivered
tokens/s stops growing) and the Enter -> upstream request time on an idle server. Sessions are
spread over the workers round-robin, as a load balancer would. Nothing is pinned: two workers
need both cores, so the simulator and this client compete with them, which the report says.
``--smoke`` runs it all briefly (for CI) and never fails on a target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from bench.client import AppProtocol, BaselineProtocol
from bench.phases import Bench, EnterResult, LevelResult, Pace, Target
from bench.procs import (
    HardLimit,
    app_env,
    collect_static,
    hard_limit,
    log_problems,
    start_baseline,
)
from bench.relay import app_revision
from bench.report import (
    TARGET_ENTER_POSTGRES_MS,
    TARGET_ENTER_SQLITE_MS,
    Check,
    checks_table,
    enter_checks,
    enter_section,
    log_lines,
    ms,
    pct,
    plateau,
    ratio,
    table,
    within,
)
from tests.support.app import App, start_app
from tests.support.processes import stop_process
from tests.support.simulator import start_simulator

PLATEAU_GAIN = 1.05
FOREIGN_WARN_WITH_SERVICES = 0.5  # "others" includes PostgreSQL and Redis here
TARGET_REDIS_RATIO = 1.5  # one worker on Redis: p99 at most 1.5x the in-process layer's
TARGET_TWO_P99_RATIO = 0.5  # two workers: p99 at most half of one worker's, at 200 streams
TARGET_TWO_TPS_RATIO = 1.6  # two workers: delivered tokens/s at saturation, 1.6x one worker's


@dataclass(frozen=True)
class Config:
    """What to run; ``--smoke`` swaps in a few-second variant of every phase."""

    levels: tuple[int, ...] = (100, 200)
    tps: float = 40.0
    tokens: int = 200
    ttft: float = 0.2
    stagger_s: float = 1.0
    saturation: tuple[int, ...] = (50, 100, 200, 300)
    saturation_tps: float = 400.0
    saturation_tokens: int = 600
    enter_sends: int = 20
    budget_s: float = 840.0
    hard_limit_s: int = 960
    smoke: bool = False


SMOKE = Config(
    levels=(10,),
    tokens=40,
    saturation=(10, 20),
    saturation_tokens=200,
    enter_sends=5,
    budget_s=75.0,
    hard_limit_s=150,
    smoke=True,
)


@dataclass(frozen=True)
class Setup:
    """One configuration of the app: a label, a marker tag, workers and whether on Redis."""

    who: str
    tag: str
    workers: int
    redis: bool
    saturation: bool


SETUPS = (
    Setup("1 worker, in-process layer", "inproc", 1, redis=False, saturation=False),
    Setup("1 worker, Redis", "redis1", 1, redis=True, saturation=True),
    Setup("2 workers, Redis", "redis2", 2, redis=True, saturation=True),
)


@dataclass
class Measured:
    """What one configuration (or the baseline) measured."""

    who: str
    levels: list[LevelResult] = field(default_factory=list)
    saturation: list[LevelResult] = field(default_factory=list)
    enter: EnterResult | None = None
    log_problems: list[str] = field(default_factory=list)
    error: str = ""

    def level(self, streams: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.streams == streams), None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="every phase briefly (~1 minute); never fails a target"
    )
    parser.add_argument("--streams", help="latency levels (100,200)")
    parser.add_argument("--saturation", help="saturation levels, 400 tok/s each (50,100,200,300)")
    parser.add_argument("--no-saturation", action="store_true", help="skip the saturation search")
    parser.add_argument("--enter", type=int, help="sequential sends timed for Enter -> upstream")
    parser.add_argument("--tps", type=float, help="tokens/s per stream of the latency levels (40)")
    parser.add_argument("--tokens", type=int, help="answer length of the latency levels (200)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    return parser.parse_args(argv)


def _levels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def config_from(args: argparse.Namespace) -> Config:
    base = SMOKE if args.smoke else Config()
    saturation = () if args.no_saturation else _levels(args.saturation) or base.saturation
    return Config(
        levels=_levels(args.streams) or base.levels,
        tps=args.tps or base.tps,
        tokens=args.tokens or base.tokens,
        ttft=base.ttft,
        stagger_s=base.stagger_s,
        saturation=saturation,
        saturation_tps=base.saturation_tps,
        saturation_tokens=base.saturation_tokens,
        enter_sends=base.enter_sends if args.enter is None else args.enter,
        budget_s=base.budget_s,
        hard_limit_s=base.hard_limit_s,
        smoke=base.smoke,
    )


@contextlib.contextmanager
def _database(kind: str, server: str, tmp: Path) -> Iterator[str]:
    """A fresh database for one configuration, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'db.sqlite3'}"
        return
    name = f"streamside_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(bench: Bench, target: Target, config: Config, saturation: bool) -> Measured:
    """Warm-up, Enter -> upstream on the idle server, the latency levels, then saturation."""
    out = Measured(target.who)
    await bench.warm_up(target)
    if config.enter_sends > 0:
        out.enter = await bench.enter_to_upstream(target, config.enter_sends)
        print(f"  {target.who}: Enter -> upstream p50 {out.enter.p50_ms:.1f} ms", file=sys.stderr)
    pace = Pace(tps=config.tps, tokens=config.tokens, ttft=config.ttft)
    for streams in config.levels:
        if bench.time_left() < pace.answer_s + streams * 0.03 + 10:
            out.error = f"{streams}-stream level skipped: time budget"
            break
        level = await bench.run_level(target, f"lat{streams}", streams, pace)
        out.levels.append(level)
        print(_line(level), file=sys.stderr)
    if saturation:
        await _saturation(bench, target, config, out)
    return out


async def _saturation(bench: Bench, target: Target, config: Config, out: Measured) -> None:
    """Raise concurrency with a fast upstream until delivered tokens/s stops growing by 5%."""
    pace = Pace(tps=config.saturation_tps, tokens=config.saturation_tokens, ttft=config.ttft)
    best = 0.0
    for streams in config.saturation:
        expected = max(pace.answer_s, streams * pace.tokens / best if best else 0.0)
        if bench.time_left() < expected + config.stagger_s + streams * 0.03 + 15:
            out.error = f"saturation level {streams} skipped: time budget"
            break
        level = await bench.run_level(target, f"sat{streams}", streams, pace)
        out.saturation.append(level)
        print(_line(level), file=sys.stderr)
        rate = level.summary.aggregate_tps
        if not math.isnan(rate) and rate < best * PLATEAU_GAIN:
            break
        best = max(best, rate) if not math.isnan(rate) else best


def _line(level: LevelResult) -> str:
    s = level.summary
    return (
        f"  {level.who}, {level.name}: p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, "
        f"{s.complete}/{s.streams} ok, {s.aggregate_tps:,.0f} tok/s, "
        f"CPU {level.app_cpu_share * 100:.0f}%"
        + (f", problems {dict(s.problems)}" if s.problems else "")
    )


def _run_setup(
    setup: Setup, bench: Bench, config: Config, args: argparse.Namespace, tmp: Path
) -> Measured:
    """Start one configuration's workers on a fresh database, measure it, stop them."""
    if setup.redis:
        redis.Redis.from_url(args.redis).flushdb()
    folder = tmp / setup.tag
    folder.mkdir()
    with _database(args.database, args.postgres, folder) as database_url:
        extra = {"DATABASE_URL": database_url}
        if setup.redis:
            extra["REDIS_URL"] = args.redis
        env = app_env(bench.simulator.base_url, tmp / "static", **extra)
        started: list[tuple[App, subprocess.Popen[bytes]]] = []
        apps: list[App] = []
        try:
            for i in range(setup.workers):
                worker = folder / f"worker-{i}"
                worker.mkdir()
                started.append(start_app(worker, env))
            apps = [app for app, _ in started]
            target = Target(setup.who, setup.tag, AppProtocol(apps), [p.pid for _, p in started])
            result = asyncio.run(measure(bench, target, config, setup.saturation))
        finally:
            for _, process in started:
                stop_process(process)
        result.log_problems = [line for app in apps for line in log_problems(app.log())]
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    started = time.monotonic()
    measured: list[Measured] = []
    status = 0
    crash = ""
    with hard_limit(config.hard_limit_s):
        try:
            redis.Redis.from_url(args.redis).ping()
            tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
            sim, sim_process = start_simulator()
            try:
                collect_static(app_env(sim.base_url, tmp / "static"))
                bench = Bench(
                    sim, sim_process.pid, started + config.budget_s, config.stagger_s, tmp
                )
                connections = max((*config.levels, *config.saturation)) + 20
                baseline, base_process = start_baseline(tmp, sim.base_url, connections)
                try:
                    target = Target(
                        "baseline", "base", BaselineProtocol(baseline.port), [base_process.pid]
                    )
                    result = asyncio.run(measure(bench, target, config, saturation=True))
                finally:
                    stop_process(base_process)
                result.log_problems = log_problems(baseline.log())
                measured.append(result)
                for setup in SETUPS:
                    measured.append(_run_setup(setup, bench, config, args, tmp))
            finally:
                stop_process(sim_process)
                shutil.rmtree(tmp, ignore_errors=True)
        except (HardLimit, KeyboardInterrupt) as exc:
            crash = f"run interrupted: {type(exc).__name__} {exc}"
            status = 130
        except Exception:
            crash = "the bench crashed:\n" + traceback.format_exc()
            status = 1
    print(render(measured, config, args.database, os.cpu_count() or 1, crash))
    print(f"  total run time {time.monotonic() - started:.0f} s")
    if status == 0 and (broken := _broken(measured)):
        print("bench.workers: the bench measured nothing in places: " + "; ".join(broken))
        status = 1
    return status


def _broken(measured: Sequence[Measured]) -> list[str]:
    reasons = []
    for m in measured:
        for lv in m.levels + m.saturation:
            if lv.summary.streams and lv.summary.complete == 0:
                reasons.append(f"{m.who} {lv.name}: no answer arrived complete")
        if m.enter is not None and not m.enter.samples_ms:
            reasons.append(f"{m.who} Enter -> upstream: no request was timed")
    if len(measured) < 1 + len(SETUPS):
        reasons.append("not every configuration was measured")
    return reasons


def render(
    measured: Sequence[Measured], config: Config, database: str, cores: int, crash: str
) -> str:
    """The report: each configuration's figures beside the baseline's, then the targets."""
    name = "PostgreSQL" if database == "postgres" else "SQLite"
    base = next((m for m in measured if m.who == "baseline"), None)
    header = [
        f"Streamside workers benchmark: in-process layer vs Redis, one worker vs two (one {name}"
        " database), against the baseline relay in the same run",
        "  baseline: bench.baseline (one Daphne process, aiohttp reader, one frame per delta; no"
        " DB, no layer, no HTML)",
        f"  app code: {app_revision()}",
        f"  latency levels: {config.tokens} tokens at {config.tps:g} tok/s, starts staggered over"
        f" {config.stagger_s:g} s; {cores} CPU cores shared by the workers, the simulator and"
        " this client (unpinned)",
    ]
    sections = ["\n".join(header), _latency_table(measured, base)]
    if any(m.saturation for m in measured):
        sections.append(_saturation_table(measured, base, config))
    enters = [m.enter for m in measured if m.enter is not None]
    if enters:
        sections.append(enter_section(enters, name))
    sections.append(_problems(measured, crash))
    sections.append(checks_table(_checks(measured, database), config.smoke))
    return "\n\n".join(sections)


def _latency_table(measured: Sequence[Measured], base: Measured | None) -> str:
    rows = []
    streams = sorted({lv.streams for m in measured for lv in m.levels})
    for n in streams:
        b = base.level(n) if base else None
        for m in measured:
            lv = m.level(n)
            if lv is None:
                continue
            s = lv.summary
            rows.append(
                [
                    str(n),
                    m.who,
                    ms(s.p50_ms),
                    ms(s.p99_ms),
                    ms(s.max_ms),
                    ms(s.first_p99_ms),
                    f"{s.complete}/{s.streams}",
                    ms(s.aggregate_tps, 0),
                    ms(lv.app_us_per_token, 0),
                    pct(lv.app_cpu_share),
                    pct(_foreign(lv)),
                    "" if m is base else ratio(s.p99_ms, b.summary.p99_ms if b else None),
                    ""
                    if m is base
                    else ratio(lv.app_us_per_token, b.app_us_per_token if b else None),
                ]
            )
    headers = [
        "streams",
        "server",
        "p50 ms",
        "p99 ms",
        "max ms",
        "first p99 ms",
        "complete",
        "delivered tok/s",
        "µs CPU/token",
        "CPU (cores)",
        "others (DB, Redis too)",
        "p99 / baseline",
        "CPU/token / baseline",
    ]
    return "1. Relay-added latency per token (every stamp)\n" + table(headers, rows)


def _saturation_table(measured: Sequence[Measured], base: Measured | None, config: Config) -> str:
    rows = []
    for m in measured:
        for lv in m.saturation:
            s = lv.summary
            rows.append(
                [
                    str(lv.streams),
                    m.who,
                    f"{s.offered_tps:g}",
                    ms(s.aggregate_tps, 0),
                    ms(s.p99_ms, 0),
                    f"{s.complete}/{s.streams}",
                    ms(lv.app_us_per_token, 0),
                    pct(lv.app_cpu_share),
                    pct(_foreign(lv)),
                ]
            )
    headers = [
        "streams",
        "server",
        "offered tok/s",
        "delivered tok/s",
        "p99 ms",
        "complete",
        "µs CPU/token",
        "CPU (cores)",
        "others (DB, Redis too)",
    ]
    lines = [
        f"2. Saturation ({config.saturation_tps:g} tok/s x {config.saturation_tokens} tokens per "
        "stream; concurrency rises until delivered tokens/s grows by less than 5%)",
        table(headers, rows),
    ]
    b_best = plateau(base.saturation) if base else None
    for m in measured:
        best = plateau(m.saturation)
        if best is not None:
            vs = (
                ""
                if m is base or b_best is None
                else ", "
                + ratio(best.summary.aggregate_tps, b_best.summary.aggregate_tps)
                + " the baseline's"
            )
            lines.append(
                f"  {m.who}: plateau {best.summary.aggregate_tps:,.0f} tok/s at {best.streams} "
                f"streams{vs}"
            )
    return "\n".join(lines)


def _foreign(level: LevelResult) -> float:
    """CPU other processes used meanwhile, in cores: PostgreSQL and Redis (part of what is
    measured here), and anything else, such as someone's test run, which skews the level."""
    return level.cpu.get("foreign_cpu_s", math.nan) / max(level.cpu.get("wall_s", 1.0), 1e-9)


def _problems(measured: Sequence[Measured], crash: str) -> str:
    lines = ["Checks"]
    for m in measured:
        for lv in m.levels + m.saturation:
            lines += [f"  {m.who} {lv.name}: {f.marker}: {f.verdict}" for f in lv.facts if not f.ok]
    if len(lines) == 1:
        lines.append("  every answer: final frame 'complete', deltas == upstream text, seq rising")
    lines = lines[:40]
    for m in measured:
        for lv in m.levels + m.saturation:
            if _foreign(lv) > FOREIGN_WARN_WITH_SERVICES:
                lines.append(
                    f"  WARNING {m.who} {lv.name}: other processes (PostgreSQL and Redis "
                    f"included) used {_foreign(lv):.0%} of a core meanwhile; if that is not "
                    "them, its figures are skewed: run again on a quiet machine"
                )
    for m in measured:
        lines += log_lines(m.who, m.log_problems)
        if m.error:
            lines.append(f"  note: {m.who}: {m.error}")
    if crash:
        lines.append(f"  {crash}")
    return "\n".join(lines)


def _compare_levels(measured: Sequence[Measured]) -> list[tuple[int, str]]:
    """The levels the p99 targets apply to: 100 and 200, or the largest run (smoke)."""
    run = {lv.streams for m in measured for lv in m.levels}
    chosen = [(n, f"{n} streams") for n in (100, 200) if n in run]
    if not chosen and run:
        chosen = [(max(run), f"{max(run)} streams (stands in for 100/200)")]
    return chosen


def _checks(measured: Sequence[Measured], database: str) -> list[Check]:
    by_who = {m.who: m for m in measured}
    base = by_who.get("baseline")
    inproc, one, two = (by_who.get(s.who) for s in SETUPS)
    checks: list[Check] = []
    levels = _compare_levels(measured)
    for n, label in levels:
        b = base.level(n) if base else None
        b_p99 = b.summary.p99_ms if b else math.nan
        a = inproc.level(n) if inproc else None
        r = one.level(n) if one else None
        if a and r:
            checks.append(
                Check(
                    f"p99, {label}: 1 worker Redis / in-process",
                    f"{ms(r.summary.p99_ms)} / {ms(a.summary.p99_ms)} ms",
                    f"{ms(b_p99)} ms",
                    ratio(r.summary.p99_ms, a.summary.p99_ms),
                    f"≤ {TARGET_REDIS_RATIO:g}× in-process",
                    within(r.summary.p99_ms, a.summary.p99_ms * TARGET_REDIS_RATIO),
                )
            )
    if levels and one and two:
        n, label = next(((n, text) for n, text in levels if n == 200), levels[-1])
        r1, r2 = one.level(n), two.level(n)
        b = base.level(n) if base else None
        if r1 and r2:
            checks.append(
                Check(
                    f"p99, {label}: 2 workers / 1 worker (Redis)",
                    f"{ms(r2.summary.p99_ms)} / {ms(r1.summary.p99_ms)} ms",
                    f"{ms(b.summary.p99_ms if b else math.nan)} ms",
                    ratio(r2.summary.p99_ms, r1.summary.p99_ms),
                    f"≤ {TARGET_TWO_P99_RATIO:g}× 1 worker",
                    within(r2.summary.p99_ms, r1.summary.p99_ms * TARGET_TWO_P99_RATIO),
                )
            )
    if one and two and (p1 := plateau(one.saturation)) and (p2 := plateau(two.saturation)):
        b_best = plateau(base.saturation) if base else None
        t1, t2 = p1.summary.aggregate_tps, p2.summary.aggregate_tps
        checks.append(
            Check(
                "saturation tok/s: 2 workers / 1 worker (Redis)",
                f"{t2:,.0f} / {t1:,.0f}",
                f"{b_best.summary.aggregate_tps:,.0f}" if b_best else "—",
                ratio(t2, t1),
                f"≥ {TARGET_TWO_TPS_RATIO:g}× 1 worker",
                None if math.isnan(t1) or math.isnan(t2) else t2 >= t1 * TARGET_TWO_TPS_RATIO,
            )
        )
    for m in measured:
        if m is base:
            continue
        for n, label in levels:
            lv, b = m.level(n), base.level(n) if base else None
            if lv and b:
                checks.append(
                    Check(
                        f"p99, {label}: {m.who}",
                        f"{ms(lv.summary.p99_ms)} ms",
                        f"{ms(b.summary.p99_ms)} ms",
                        ratio(lv.summary.p99_ms, b.summary.p99_ms),
                    )
                )
    enters = [m.enter for m in measured if m.enter is not None]
    if database == "postgres":
        checks += enter_checks(enters, TARGET_ENTER_POSTGRES_MS, "PostgreSQL")
    else:
        checks += enter_checks(enters, TARGET_ENTER_SQLITE_MS, "SQLite")
    apps = [m for m in measured if m is not base]
    bad = sum(lv.summary.streams - lv.summary.complete for m in apps for lv in m.levels)
    total = sum(lv.summary.streams for m in apps for lv in m.levels)
    checks.append(
        Check("answers lost/reordered/stuck, latency levels", f"{bad} of {total}", "", "", "0",
              bad == 0 if total else None)
    )  # fmt: skip
    return checks


if __name__ == "__main__":
    raise SystemExit(main())
