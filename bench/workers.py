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
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.client_baseline import BaselineProtocol
from bench.phase_types import Target
from bench.phases import Bench
from bench.procs import HardLimit, app_env, collect_static, hard_limit, log_problems, start_baseline
from bench.workers_config import SETUPS, config_from
from bench.workers_report import render
from bench.workers_run import Measured, measure, run_setup
from tests.support.processes import stop_process
from tests.support.simulator import start_simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; the module docstring is the ``--help`` description."""
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


def main(argv: list[str] | None = None) -> int:
    """Start the simulator, measure the baseline then each configuration, print the report."""
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
                    measured.append(run_setup(setup, bench, config, args, tmp))
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
    """Why the bench itself measured nothing somewhere (exit non-zero even in smoke)."""
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


if __name__ == "__main__":
    raise SystemExit(main())
