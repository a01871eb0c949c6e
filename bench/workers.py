"""``python -m bench.workers`` (``make bench-workers``): the same streams held by one Daphne
worker and by two behind the Redis channel layer, sharing one database (PostgreSQL, as a team
deploys it, or SQLite with ``--database sqlite``); prints relay-added
latency per chunk (as ``bench.relay`` measures it), delivered tokens/s, the workers' CPU and
the scaling ratio.

Both configurations use Redis, so the figure isolates adding a worker. Sessions are spread
over the workers round-robin, as a load balancer would. Nothing is pinned: on a machine with
few cores the simulator and this client compete with the workers, which the report says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis

from bench.analysis import LevelSummary, analyse_stream, by_marker, summarise
from bench.client import create_seats, make_prompt, run_streams
from bench.phases import Pace
from bench.procs import cpu_seconds
from tests.conftest import ROOT, App, Simulator, start_app, start_simulator, stop_process


@dataclass(frozen=True)
class Row:
    workers: int
    streams: int
    summary: LevelSummary
    cpu_s: float
    wall_s: float


def _env(sim_url: str, redis_url: str, database_url: str, static: Path) -> dict[str, str]:
    return {
        "LLM_API_BASE": sim_url,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CHAT_REQUIRE_LOGIN": "0",
        "CHAT_RATE_LIMIT": "0",  # the load is the point here
        "CHAT_HTTPS": "0",
        "STATIC_ROOT": str(static),
        "STREAM_SAVE_INTERVAL_MS": "1000",
    }


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


def _split(streams: int, workers: int) -> list[int]:
    """How many sessions each worker gets, round-robin."""
    return [streams // workers + (1 if i < streams % workers else 0) for i in range(workers)]


async def _level(apps: list[App], pids: list[int], streams: int, pace: Pace, sim: Simulator) -> Row:
    seats = []
    for app, count in zip(apps, _split(streams, len(apps)), strict=True):
        seats += await asyncio.to_thread(create_seats, app, count)
    seats.sort(key=lambda seat: seat.conversation_id)  # staggered starts alternate workers
    httpx.delete(f"http://127.0.0.1:{sim.port}/_sim/requests", timeout=10).raise_for_status()
    prompts = [
        make_prompt(f"bench-w{len(apps)}-{streams}-{i:04d}", **pace.sim_options(seed=i))
        for i in range(streams)
    ]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    records = await run_streams(seats, prompts, stagger_s=1.0, timeout_s=pace.answer_s * 10 + 30)
    wall = time.monotonic() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    log = by_marker(await asyncio.to_thread(sim.requests))
    facts = [analyse_stream(r, log.get(r.marker)) for r in records]
    return Row(len(apps), streams, summarise(facts, offered_tps=streams * pace.tps), cpu, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--streams", default="200,400", help="concurrency levels (200,400)")
    parser.add_argument("--tps", type=float, default=40.0)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.streams.split(",") if x.strip()]
    pace = Pace(tps=args.tps, tokens=args.tokens)
    redis.Redis.from_url(args.redis).ping()
    sim, sim_process = start_simulator()
    rows: list[Row] = []
    try:
        for workers in (1, 2):
            redis.Redis.from_url(args.redis).flushdb()
            tmp = Path(tempfile.mkdtemp(prefix=f"bench-workers-{workers}-"))
            with _database(args.database, args.postgres, tmp) as database_url:
                env = _env(sim.base_url, args.redis, database_url, tmp / "static")
                rows += _configuration(workers, env, tmp, levels, pace, sim)
    finally:
        stop_process(sim_process)
    print(_report(rows, pace, os.cpu_count() or 1, args.database))
    return 0


def _configuration(
    workers: int, env: dict[str, str], tmp: Path, levels: list[int], pace: Pace, sim: Simulator
) -> list[Row]:
    """Start ``workers`` Daphne processes on one database and run every level against them."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env={**os.environ, **env}, check=True,
    )  # fmt: skip
    started: list[tuple[App, subprocess.Popen[bytes]]] = []
    rows = []
    try:
        for i in range(workers):
            folder = tmp / f"worker-{i}"
            folder.mkdir()
            started.append(start_app(folder, env))
        pids = [process.pid for _, process in started]
        apps = [app for app, _ in started]
        asyncio.run(_level(apps, pids, 1, Pace(tps=200, tokens=20), sim))  # warm-up
        for streams in levels:
            row = asyncio.run(_level(apps, pids, streams, pace, sim))
            rows.append(row)
            print(_line(row), file=sys.stderr)
    finally:
        for _, process in started:
            stop_process(process)
    return rows


def _line(row: Row) -> str:
    s = row.summary
    return (
        f"  {row.workers} worker(s), {row.streams} streams: p50 {s.p50_ms:.1f} ms, "
        f"p99 {s.p99_ms:.1f} ms, {s.complete}/{row.streams} ok, {s.aggregate_tps:,.0f} tok/s"
        + (f", problems {dict(s.problems)}" if s.problems else "")
    )


def _report(rows: list[Row], pace: Pace, cores: int, database: str) -> str:
    name = "PostgreSQL" if database == "postgres" else "SQLite"
    lines = [
        f"Streamside: one worker against two (Redis channel layer, one {name} database)",
        f"  streams of {pace.tokens} tokens at {pace.tps:g} tok/s, starts staggered over 1 s; "
        f"{cores} CPU cores shared by the workers, the simulator and this client (unpinned)",
        "",
        "  workers  streams  p50 ms  p99 ms  max ms  first p99 ms  complete  delivered tok/s  "
        "workers' CPU",
        "  -------  -------  ------  ------  ------  ------------  --------  ---------------  "
        "------------",
    ]
    for r in rows:
        s = r.summary
        lines.append(
            f"  {r.workers:>7}  {r.streams:>7}  {s.p50_ms:>6.1f}  {s.p99_ms:>6.1f}  "
            f"{s.max_ms:>6.1f}  {s.first_p99_ms:>12.1f}  {s.complete:>4}/{r.streams:<3}  "
            f"{s.aggregate_tps:>15,.0f}  {r.cpu_s / r.wall_s:>11.0%}"
        )
    lines.append("")
    for streams in sorted({r.streams for r in rows}):
        one = next((r for r in rows if r.workers == 1 and r.streams == streams), None)
        two = next((r for r in rows if r.workers == 2 and r.streams == streams), None)
        if one and two:
            latency = one.summary.p99_ms / two.summary.p99_ms
            rate = two.summary.aggregate_tps / one.summary.aggregate_tps
            lines.append(
                f"  scaling at {streams} streams, two workers against one: p99 latency "
                f"x{latency:.2f} lower, delivered tokens/s x{rate:.2f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
