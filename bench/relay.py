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
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from bench.client_app import AppProtocol
from bench.client_baseline import BaselineProtocol
from bench.phase_types import Target
from bench.phases import Bench
from bench.procs import HardLimit, Servers, hard_limit, running_servers
from bench.relay_config import config_from
from bench.relay_run import Run, measure
from bench.report import render
from bench.report_results import Results, write_json
from bench.revision import app_revision


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; the module docstring is the ``--help`` description."""
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


def _targets(servers: Servers) -> tuple[Target, Target]:
    """The two servers under test as the phases see them."""
    app = Target("app", "app", AppProtocol([servers.app]), [servers.app_process.pid])
    base = Target(
        "baseline", "base", BaselineProtocol(servers.baseline.port), [servers.baseline_process.pid]
    )
    return app, base


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the phases, print the report; the status says if the bench worked."""
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
