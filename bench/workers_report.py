"""The report of ``bench.workers``: each configuration's figures beside the baseline's, the
checks, then the summary of its targets (Redis vs in-process, two workers vs one).

"Others" here includes PostgreSQL and Redis, which are part of what is measured, so a level is
only flagged when other processes used much more than they would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.phase_types import LevelResult
from bench.report_format import log_lines, ms, pct, ratio, table
from bench.report_latency import enter_section
from bench.report_results import plateau
from bench.report_targets import (
    TARGET_ENTER_POSTGRES_MS,
    TARGET_ENTER_SQLITE_MS,
    Check,
    checks_table,
    enter_checks,
    within,
)
from bench.revision import app_revision
from bench.workers_config import SETUPS, Config
from bench.workers_run import Measured

FOREIGN_WARN_WITH_SERVICES = 0.5  # "others" includes PostgreSQL and Redis here
TARGET_REDIS_RATIO = 1.5  # one worker on Redis: p99 at most 1.5x the in-process layer's
TARGET_TWO_P99_RATIO = 0.5  # two workers: p99 at most half of one worker's, at 200 streams
TARGET_TWO_TPS_RATIO = 1.6  # two workers: delivered tokens/s at saturation, 1.6x one worker's


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
    """Figure 1: each latency level, every configuration beside the baseline."""
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
    """Figure 2: every saturation level, and each configuration's plateau."""
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
    """What went wrong: bad answers, skewed levels, log lines, skipped levels, a crash."""
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
    """The summary: Redis vs in-process, two workers vs one, Enter -> upstream, lost answers."""
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
