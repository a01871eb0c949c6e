"""The issue's targets (bench/README.md "Targets") and the summary table that marks them.

Both reports (``bench.relay`` and ``bench.workers``) end with the same kind of summary: one
row per figure, app beside baseline, the target and PASS/FAIL; the rows are built here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.phase_enter import EnterResult
from bench.report_format import ms, ratio, table

# The targets (bench/README.md "Targets").
TARGET_P50_1_ADDED_MS = 2.0  # one stream: p50 at most the baseline's + 2 ms
TARGET_P99_1_ADDED_MS = 5.0  # one stream: p99 at most the baseline's + 5 ms
TARGET_FIRST_MS = 5.0  # first token -> first frame, one stream
TARGET_P99_RATIO = 1.0  # 100 and 200 streams, one worker, in-process layer
TARGET_CPU_RATIO = 1.3  # CPU per token
TARGET_RSS_RATIO = 1.5  # memory per open stream
TARGET_BYTES_RATIO = 8.0  # wire (TCP) bytes per answer byte, at 40 tokens/s
TARGET_BYTES_TPS = 40.0
TARGET_STUCK_RSS_MB = 20.0
TARGET_STUCK_P99_CHANGE = 0.10
TARGET_ENTER_SQLITE_MS = 15.0
TARGET_ENTER_POSTGRES_MS = 25.0
TARGET_LEVELS = (100, 200)


@dataclass(frozen=True)
class Check:
    """One summary row: a figure for the app and the baseline, and the target if there is one."""

    figure: str
    app: str
    baseline: str
    ratio: str
    target: str = "—"
    ok: bool | None = None


def verdict(ok: bool | None) -> str:
    """PASS, FAIL or "—" (not measured, or no target for that row)."""
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def within(value: float, limit: float) -> bool | None:
    """``value <= limit``, or None when either was not measured."""
    if math.isnan(value) or math.isnan(limit):
        return None
    return value <= limit


def checks_table(checks: Sequence[Check], smoke: bool) -> str:
    """The summary table; a smoke run shows the targets without judging them (too short)."""
    rows = [[c.figure, c.app, c.baseline, c.ratio, c.target, verdict(c.ok)] for c in checks]
    head = "Summary (app / baseline; targets from bench/README.md)"
    if smoke:
        head += " - smoke run: too short to judge, targets are shown, not enforced"
    return head + "\n" + table(["figure", "app", "baseline", "ratio", "target", ""], rows)


def enter_checks(enters: Sequence[EnterResult], limit_ms: float, database: str) -> list[Check]:
    """The Enter -> upstream target for every app configuration measured."""
    base = next((e for e in enters if e.who == "baseline"), None)
    b_p50 = base.p50_ms if base else math.nan
    return [
        Check(
            f"Enter -> upstream request p50 ({e.who}, {database})",
            f"{ms(e.p50_ms)} ms",
            f"{ms(b_p50)} ms",
            ratio(e.p50_ms, b_p50),
            f"≤ {limit_ms:g} ms",
            within(e.p50_ms, limit_ms),
        )
        for e in enters
        if e is not base
    ]
