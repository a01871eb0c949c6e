"""The run of ``bench.workers`` for one configuration (or the baseline): warm-up, Enter ->
upstream on the idle server, the latency levels, then the saturation search.

Each app configuration gets its own fresh database and a flushed Redis, and its workers are
stopped before the next starts: configurations share nothing but the simulator, so one
cannot skew another's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from bench.client_app import AppProtocol
from bench.phase_enter import EnterResult, enter_to_upstream
from bench.phase_types import LevelResult, Pace, Target
from bench.phases import Bench
from bench.procs import app_env, log_problems
from bench.workers_config import Config, Setup
from tests.support.app import App, start_app
from tests.support.processes import stop_process

PLATEAU_GAIN = 1.05  # a saturation level must beat the best so far by 5% to count as growth


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
        out.enter = await enter_to_upstream(bench, target, config.enter_sends)
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
    """One line per level on stderr, so a long run shows it is alive and how it goes."""
    s = level.summary
    return (
        f"  {level.who}, {level.name}: p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, "
        f"{s.complete}/{s.streams} ok, {s.aggregate_tps:,.0f} tok/s, "
        f"CPU {level.app_cpu_share * 100:.0f}%"
        + (f", problems {dict(s.problems)}" if s.problems else "")
    )


def run_setup(
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
