"""Formatting helpers of the reports: numbers, ratios, aligned tables and the cells that
several figures share.

The relay's report and the workers' report print the same way (app beside baseline, ``×r``
ratios, "—" for what was not measured), so they share these rather than each keeping a copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bench.phase_types import LevelResult


def ms(value: float | None, digits: int = 1) -> str:
    """A figure with ``digits`` decimals, or "—" when it was not measured (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def pct(value: float) -> str:
    """A share as a whole percentage (0.42 -> 42%), "—" when not measured."""
    return "—" if math.isnan(value) else f"{value * 100:.0f}%"


def ratio(app: float | None, base: float | None) -> str:
    """``×r`` = app / baseline (above 1: the app costs more)."""
    if app is None or base is None or math.isnan(app) or math.isnan(base) or base == 0:
        return "—"
    return f"×{app / base:.2f}"


def nan_to(value: float | None) -> float:
    """None as NaN, so a missing figure flows through the arithmetic like an unmeasured one."""
    return math.nan if value is None else value


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Right-aligned columns, first column left-aligned."""
    rows = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(headers))]
    lines = []
    for row in rows:
        cells = [
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def signed_pct(value: float) -> str:
    """A relative change with its sign (+12%), so better and worse read apart."""
    return "—" if math.isnan(value) else f"{value * 100:+.0f}%"


def log_lines(who: str, problems: Sequence[str]) -> list[str]:
    """A server log's warnings and errors, a few shown: that there are any matters most."""
    if not problems:
        return [f"  {who} log: no warnings or errors"]
    return [f"  {who} log: {len(problems)} warning/error lines, e.g."] + [
        f"    {line[:160]}" for line in problems[:5]
    ]


def completeness(level: LevelResult) -> str:
    """Answers complete out of the level's, with what went wrong with the others."""
    s = level.summary
    return f"{s.complete}/{s.streams}" + (f" {s.problems}" if s.problems else "")


def cpu_cols(level: LevelResult) -> list[str]:
    """The server's CPU, each core's, other processes': whether a level can be trusted."""
    wall = max(level.cpu.get("wall_s", 1.0), 1e-9)
    return [
        pct(level.app_cpu_share),
        pct(level.cpu.get("cpu0_busy", math.nan)),
        pct(level.cpu.get("cpu1_busy", math.nan)),
        pct(level.cpu.get("foreign_cpu_s", math.nan) / wall),
    ]


def pairs(
    app: Sequence[LevelResult], base: Sequence[LevelResult]
) -> list[tuple[LevelResult, LevelResult | None]]:
    """Each app level with the baseline's level of the same name (None if it did not run)."""
    by_name = {lv.name: lv for lv in base}
    return [(lv, by_name.get(lv.name)) for lv in app]
