"""What ``bench.workers`` runs: the levels and saturation search (``--smoke``: a brief variant)
and the app configurations compared (``SETUPS``).

The configurations are listed once here because the run starts them and the summary's
targets compare them by name (Redis vs in-process, two workers vs one).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


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


def _levels(text: str | None) -> tuple[int, ...] | None:
    """A comma-separated list of concurrencies, sorted and deduplicated (None if empty)."""
    if not text:
        return None
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def config_from(args: argparse.Namespace) -> Config:
    """The run's ``Config``: ``--smoke`` picks the base, the other options override it."""
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
