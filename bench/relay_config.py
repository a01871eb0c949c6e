"""What ``bench.relay`` runs: its phases' sizes, the ``--quick`` and ``--smoke`` variants, and
the options that change them.

One frozen ``Config`` per run, built once from the command line, is what the phases read and
what ``--json`` records, so a run's figures always come with the settings that produced them.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any


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


def _levels(text: str | None) -> tuple[int, ...] | None:
    """A comma-separated list of concurrencies, sorted and deduplicated (None if empty)."""
    if not text:
        return None
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def config_from(args: argparse.Namespace) -> Config:
    """The run's ``Config``: ``--quick``/``--smoke`` pick the base, other options override it."""
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
