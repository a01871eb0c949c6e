"""The summary of ``bench.relay``'s report: each of the issue's targets, PASS or FAIL.

It reads every figure family, so it is kept apart from their tables: a target changes here
without touching how a figure is printed.
"""

from __future__ import annotations

import math

from bench.report_format import ms, ratio, signed_pct
from bench.report_results import Results
from bench.report_targets import (
    TARGET_BYTES_RATIO,
    TARGET_BYTES_TPS,
    TARGET_CPU_RATIO,
    TARGET_ENTER_SQLITE_MS,
    TARGET_FIRST_MS,
    TARGET_P50_1_ADDED_MS,
    TARGET_P99_1_ADDED_MS,
    TARGET_P99_RATIO,
    TARGET_RSS_RATIO,
    TARGET_STUCK_P99_CHANGE,
    TARGET_STUCK_RSS_MB,
    Check,
    checks_table,
    enter_checks,
    within,
)


def _latency_checks(results: Results) -> list[Check]:
    """The latency levels' targets: 1 stream, the 100/200 levels (or their stand-in), 500, RSS."""
    checks = []
    one, b_one = results.level(1), results.level(1, base=True)
    if one and b_one:
        a, b = one.summary, b_one.summary
        checks += [
            Check(
                "added latency p50, 1 stream",
                f"{ms(a.p50_ms)} ms",
                f"{ms(b.p50_ms)} ms",
                ratio(a.p50_ms, b.p50_ms),
                f"≤ baseline + {TARGET_P50_1_ADDED_MS:g} ms",
                within(a.p50_ms, b.p50_ms + TARGET_P50_1_ADDED_MS),
            ),
            Check(
                "added latency p99, 1 stream",
                f"{ms(a.p99_ms)} ms",
                f"{ms(b.p99_ms)} ms",
                ratio(a.p99_ms, b.p99_ms),
                f"≤ baseline + {TARGET_P99_1_ADDED_MS:g} ms",
                within(a.p99_ms, b.p99_ms + TARGET_P99_1_ADDED_MS),
            ),
            Check(
                "first token -> first frame p99, 1 stream",
                f"{ms(a.first_p99_ms, 2)} ms",
                f"{ms(b.first_p99_ms, 2)} ms",
                ratio(a.first_p99_ms, b.first_p99_ms),
                f"≤ {TARGET_FIRST_MS:g} ms",
                within(a.first_p99_ms, TARGET_FIRST_MS),
            ),
        ]
    for streams, label in results.target_levels():
        app, base = results.level(streams), results.level(streams, base=True)
        if not app or not base:
            continue
        a, b = app.summary, base.summary
        checks += [
            Check(
                f"latency p99, {label}",
                f"{ms(a.p99_ms)} ms",
                f"{ms(b.p99_ms)} ms",
                ratio(a.p99_ms, b.p99_ms),
                f"≤ {TARGET_P99_RATIO:g}× baseline",
                within(a.p99_ms, b.p99_ms * TARGET_P99_RATIO),
            ),
            Check(
                f"CPU per token, {label}",
                f"{ms(app.app_us_per_token, 0)} µs",
                f"{ms(base.app_us_per_token, 0)} µs",
                ratio(app.app_us_per_token, base.app_us_per_token),
                f"≤ {TARGET_CPU_RATIO:g}× baseline",
                within(app.app_us_per_token, base.app_us_per_token * TARGET_CPU_RATIO),
            ),
        ]
    if (five := results.level(500)) is not None:
        base = results.level(500, base=True)
        checks.append(
            Check(
                "500 streams: every token delivered",
                f"{five.summary.complete}/{five.summary.streams} complete",
                f"{base.summary.complete}/{base.summary.streams}" if base else "—",
                "",
                "all",
                five.all_tokens_delivered,
            )
        )
    concurrent = [lv for lv in results.levels if lv.streams > 1]
    if concurrent:
        app = max(concurrent, key=lambda lv: lv.streams)
        base = results.level(app.streams, base=True)
        b_kb = base.rss_per_stream_kb if base else math.nan
        checks.append(
            Check(
                f"RSS per open stream, {app.streams} streams",
                f"{ms(app.rss_per_stream_kb, 0)} KB",
                f"{ms(b_kb, 0)} KB",
                ratio(app.rss_per_stream_kb, b_kb),
                f"≤ {TARGET_RSS_RATIO:g}× baseline",
                within(app.rss_per_stream_kb, b_kb * TARGET_RSS_RATIO),
            )
        )
    return checks


def _other_checks(results: Results) -> list[Check]:
    """The other phases' targets: bytes, stuck reader, Enter -> upstream, ceiling, lost answers."""
    checks = []
    base_bytes = {b.target_chars: b for b in results.base_bytes}
    at_target_pace = results.bytes_tps == TARGET_BYTES_TPS
    for b in results.bytes:
        other = base_bytes.get(b.target_chars)
        checks += [
            Check(
                f"wire bytes / answer byte, ~{b.target_chars:,} chars (app {b.compression}, "
                f"baseline {other.compression if other else '—'})",
                ms(b.wire_ratio, 2),
                ms(other.wire_ratio, 2) if other else "—",
                ratio(b.wire_ratio, other.wire_ratio if other else None),
                f"≤ {TARGET_BYTES_RATIO:g}" + ("" if at_target_pace else " (at 40 tok/s only)"),
                within(b.wire_ratio, TARGET_BYTES_RATIO) if at_target_pace else None,
            ),
            Check(
                f"payload bytes / answer byte, ~{b.target_chars:,} chars (uncompressed)",
                ms(b.payload_ratio, 2),
                ms(other.payload_ratio, 2) if other else "—",
                ratio(b.payload_ratio, other.payload_ratio if other else None),
            ),
        ]
    app_stuck = next((r for r in results.stuck if r.who == "app"), None)
    base_stuck = next((r for r in results.stuck if r.who == "baseline"), None)
    if app_stuck is not None:
        b_growth = base_stuck.rss_growth_mb if base_stuck else math.nan
        b_change = base_stuck.p99_change if base_stuck else math.nan
        checks += [
            Check(
                "stuck reader: RSS growth",
                f"{app_stuck.rss_growth_mb:.1f} MB",
                f"{ms(b_growth)} MB",
                "",
                f"≤ {TARGET_STUCK_RSS_MB:g} MB",
                within(app_stuck.rss_growth_mb, TARGET_STUCK_RSS_MB),
            ),
            Check(
                f"stuck reader: other {app_stuck.clean.streams} sockets' p99 change",
                signed_pct(app_stuck.p99_change),
                signed_pct(b_change),
                "",
                f"≤ {TARGET_STUCK_P99_CHANGE * 100:g}%",
                within(app_stuck.p99_change, TARGET_STUCK_P99_CHANGE),
            ),
        ]
    checks += enter_checks(results.enter, TARGET_ENTER_SQLITE_MS, "SQLite")
    app, base = results.plateau(), results.plateau(base=True)
    if app is not None:
        b_tps = base.summary.aggregate_tps if base else math.nan
        checks.append(
            Check(
                "ceiling (plateau), delivered tokens/s",
                f"{app.summary.aggregate_tps:,.0f} at {app.streams}",
                f"{b_tps:,.0f} at {base.streams}" if base else "—",
                ratio(app.summary.aggregate_tps, b_tps),
            )
        )
    levels = results.levels + results.throughput
    bad = sum(lv.summary.streams - lv.summary.complete for lv in levels)
    total = sum(lv.summary.streams for lv in levels)
    base_levels = results.base_levels + results.base_throughput
    b_bad = sum(lv.summary.streams - lv.summary.complete for lv in base_levels)
    b_total = sum(lv.summary.streams for lv in base_levels)
    checks.append(
        Check(
            "answers lost/reordered/duplicated/stuck, all levels",
            f"{bad} of {total}",
            f"{b_bad} of {b_total}",
            "",
            "0",
            bad == 0 if total else None,
        )
    )
    return checks


def summary_section(results: Results) -> str:
    """Every target of the relay run, PASS/FAIL (not judged in a smoke run)."""
    checks = _latency_checks(results) + _other_checks(results)
    return checks_table(checks, bool(results.config.get("smoke")))
