"""The latency figures of ``bench.relay``'s report: 1. relay-added latency per token,
2. first token, 3. Enter -> upstream request.

Each row puts the app beside the baseline measured in the same run, then their ratio:
milliseconds vary several-fold from day to day here, the ratio much less.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.phase_enter import EnterResult
from bench.phase_types import LevelResult
from bench.report_format import completeness, cpu_cols, ms, pairs, ratio, table
from bench.report_results import Results


def latency_section(results: Results) -> str:
    """Figure 1: per level, app, baseline and ratio; the per-second timeline shows stalls."""
    rows = []
    for app, base in pairs(results.levels, results.base_levels):
        for lv in (app, base):
            if lv is None:
                continue
            s = lv.summary
            rows.append(
                [
                    str(lv.streams),
                    lv.who,
                    str(s.samples),
                    ms(s.p50_ms),
                    ms(s.p99_ms),
                    ms(s.max_ms),
                    ms(s.frames_per_answer, 0),
                    completeness(lv),
                    f"{ms(s.delivered_tps_per_stream)}/{ms(s.upstream_tps_per_stream)}"
                    f"/{lv.pace.tps:g}",
                    f"{ms(s.aggregate_tps, 0)}/{ms(s.upstream_aggregate_tps, 0)}/{s.offered_tps:g}",
                    ms(lv.app_us_per_token, 0),
                    *cpu_cols(lv),
                ]
            )
        if base is not None:
            a, b = app.summary, base.summary
            rows.append(
                [
                    "",
                    "app/baseline",
                    "",
                    ratio(a.p50_ms, b.p50_ms),
                    ratio(a.p99_ms, b.p99_ms),
                    ratio(a.max_ms, b.max_ms),
                    ratio(a.frames_per_answer, b.frames_per_answer),
                    "",
                    "",
                    "",
                    ratio(app.app_us_per_token, base.app_us_per_token),
                    ratio(app.app_cpu_share, base.app_cpu_share),
                    "",
                    "",
                    "",
                ]
            )
    headers = [
        "streams",
        "server",
        "samples",
        "p50 ms",
        "p99 ms",
        "max ms",
        "frames/ans",
        "complete+in order",
        "tok/s per stream deliv/upstream/offered",
        "all streams tok/s deliv/upstream/offered",
        "µs CPU/token",
        "CPU",
        "cpu0",
        "cpu1",
        "others",
    ]
    text = (
        "1. Relay-added latency per token (ws receive time - upstream send stamp; every stamp)\n"
        + table(headers, rows)
    )
    for app, base in pairs(results.levels, results.base_levels):
        if app.streams >= 100:
            text += timeline_lines(app) + (timeline_lines(base) if base else "")
    return text


def timeline_lines(level: LevelResult) -> str:
    """Tokens delivered and p99 per second of a level: a stall shows as a gap, then a burst."""
    cells = [f"{sec}s:{n}/{ms(p99, 0)}" for sec, n, p99 in level.summary.timeline]
    return f"\n  {level.who}, {level.streams} streams, per second (tokens/p99 ms): " + " ".join(
        cells
    )


def first_token_section(results: Results) -> str:
    """Figure 2: the first delta must not wait for a coalescing window."""
    rows = []
    for app, base in pairs(results.levels, results.base_levels):
        a = app.summary
        b = base.summary if base else None
        rows.append(
            [
                str(app.streams),
                f"{ms(a.first_p50_ms, 2)}/{ms(a.first_p99_ms, 2)}",
                f"{ms(b.first_p50_ms, 2)}/{ms(b.first_p99_ms, 2)}" if b else "—",
                ratio(a.first_p50_ms, b.first_p50_ms if b else None),
                ratio(a.first_p99_ms, b.first_p99_ms if b else None),
                str(a.first_missing),
            ]
        )
    headers = [
        "streams",
        "app p50/p99 ms",
        "baseline p50/p99 ms",
        "p50 ratio",
        "p99 ratio",
        "app answers without a first stamp",
    ]
    return (
        "2. First token: upstream's first content chunk (stamp) -> first delta frame received\n"
        + table(headers, rows)
    )


def enter_section(enters: Sequence[EnterResult], database: str) -> str:
    """Client sends a message -> the simulator receives the upstream request."""
    base = next((e for e in enters if e.who == "baseline"), None)
    rows = [
        [
            e.who,
            str(len(e.samples_ms)),
            ms(e.p50_ms),
            ms(e.max_ms),
            str(e.failed),
            ratio(e.p50_ms, base.p50_ms) if base is not None and e is not base else "",
        ]
        for e in enters
    ]
    return (
        f"3. Enter -> upstream request ({database}; sequential sends on an idle server, each on "
        "its own open socket; client send time -> the simulator's arrival stamp)\n"
        + table(["server", "sends", "p50 ms", "max ms", "failed answers", "p50 / baseline"], rows)
    )
