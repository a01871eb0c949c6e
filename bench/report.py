"""The plain-text report and the JSON dump.

Every figure is printed next to what a bare relay measured on this machine
(``../shared/reference/performance.md``) and the issue's targets, so a reader can tell
at a glance what the product adds on top of the unavoidable cost of relaying.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.phases import LevelResult
from bench.procs import Pinning
from bench.profile import Profile

TOP_FUNCTIONS = 15

# What performance.md says a bare relay (no DB, no channel layer, no HTML) does here.
REF = {
    "latency_1": "p50 0.6 ms",
    "first_1": "1-2 ms",
    "p99_200": "130 ms (91 ms with a 10-20 ms throttle)",
    "p99_500": "481 ms",
    "order_500": "0 lost/reordered in 94,730 answers",
    "ceiling": "~40,000 deltas/s at a 0 ms upstream (70-73k with a throttle)",
    "cpu_per_delta": "145-160 µs/delta under pacing",
    "rss": "85-90 KB per active stream (26 KB per idle socket)",
}
TARGET_FIRST_MS = 5.0
TARGET_P99_200_MS = 150.0
FOREIGN_WARN = 0.15  # other processes' CPU share that makes a level's figures suspect


@dataclass
class BytesResult:
    """Websocket bytes for one answer of a given length, split by frame kind."""

    target_chars: int
    tokens: int
    chars: int
    answer_bytes: int
    frames: int
    ws_bytes: int
    turn_bytes: int
    delta_bytes: int
    final_bytes: int
    verdict: str

    @property
    def ratio(self) -> float:
        return self.ws_bytes / self.answer_bytes if self.answer_bytes else math.nan

    @property
    def delta_ratio(self) -> float:
        return self.delta_bytes / self.answer_bytes if self.answer_bytes else math.nan


@dataclass
class Results:
    """Everything one run measured (what ``--json`` writes)."""

    config: dict[str, Any]
    pinning: Pinning
    revision: str = ""
    levels: list[LevelResult] = field(default_factory=list)
    bytes: list[BytesResult] = field(default_factory=list)
    bytes_pace: str = ""
    throughput: list[LevelResult] = field(default_factory=list)
    profile: Profile | None = None
    rss_idle_kb: int = 0
    app_log_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def level(self, streams: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.streams == streams), None)

    @property
    def plateau(self) -> LevelResult | None:
        rated = [lv for lv in self.throughput if not math.isnan(lv.summary.aggregate_tps)]
        return max(rated, key=lambda lv: lv.summary.aggregate_tps, default=None)


def ms(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value * 100:.0f}%"


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


def _problems(level: LevelResult) -> str:
    s = level.summary
    return f"{s.complete}/{s.streams}" + (f" {s.problems}" if s.problems else "")


def _cpu_cols(level: LevelResult) -> list[str]:
    wall = max(level.cpu.get("wall_s", 1.0), 1e-9)
    return [
        pct(level.app_cpu_share),
        pct(level.cpu.get("cpu0_busy", math.nan)),
        pct(level.cpu.get("cpu1_busy", math.nan)),
        pct(level.cpu.get("foreign_cpu_s", math.nan) / wall),
    ]


def latency_section(results: Results) -> str:
    rows = []
    for lv in results.levels:
        s = lv.summary
        rows.append(
            [
                str(lv.streams),
                str(s.samples),
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                ms(s.frames_per_answer, 0),
                _problems(lv),
                f"{ms(s.delivered_tps_per_stream)}/{ms(s.upstream_tps_per_stream)}/{lv.pace.tps:g}",
                f"{ms(s.aggregate_tps, 0)}/{ms(s.upstream_aggregate_tps, 0)}/{s.offered_tps:g}",
                ms(lv.app_us_per_token, 0),
                *_cpu_cols(lv),
            ]
        )
    headers = [
        "streams",
        "samples",
        "p50 ms",
        "p99 ms",
        "max ms",
        "frames/ans",
        "complete+in order",
        "tok/s per stream deliv/upstream/offered",
        "all streams tok/s deliv/upstream/offered",
        "app µs/token",
        "app CPU",
        "cpu0",
        "cpu1",
        "others",
    ]
    text = (
        "1. Relay-added latency per token (ws receive time - upstream send stamp; every stamp)\n"
        + table(headers, rows)
    )
    return text + "".join(timeline_lines(lv) for lv in results.levels if lv.streams >= 100)


def timeline_lines(level: LevelResult) -> str:
    """Tokens delivered and p99 per second of a level: a stall shows as a gap, then a burst."""
    cells = [f"{sec}s:{n}/{ms(p99, 0)}" for sec, n, p99 in level.summary.timeline]
    return f"\n  {level.streams} streams, per second (tokens/p99 ms): " + " ".join(cells)


def first_token_section(results: Results) -> str:
    rows = [
        [
            str(lv.streams),
            ms(lv.summary.first_p50_ms, 2),
            ms(lv.summary.first_p99_ms, 2),
            str(lv.summary.first_missing),
        ]
        for lv in results.levels
    ]
    return (
        "2. First token: upstream's first content chunk (stamp) -> first delta frame received\n"
        + table(["streams", "p50 ms", "p99 ms", "answers without a first stamp"], rows)
    )


def throughput_section(results: Results) -> str:
    rows = []
    for lv in results.throughput:
        s = lv.summary
        rows.append(
            [
                str(lv.streams),
                f"{s.offered_tps:g}",
                ms(s.aggregate_tps, 0),
                ms(s.upstream_aggregate_tps, 0),
                ms(s.aggregate_span_s, 1),
                ms(s.p50_ms, 0),
                ms(s.p99_ms, 0),
                ms(s.frames_per_answer, 0),
                ms(lv.app_us_per_token, 0),
                ms(lv.app_us_per_frame, 0),
                _problems(lv),
                *_cpu_cols(lv),
            ]
        )
    headers = [
        "streams",
        "offered tok/s",
        "delivered tok/s",
        "upstream sent tok/s",
        "span s",
        "p50 ms",
        "p99 ms",
        "frames/ans",
        "app µs/token",
        "app µs/frame",
        "complete",
        "app CPU",
        "cpu0",
        "cpu1",
        "others",
    ]
    best = results.plateau
    pace = results.throughput[0].pace if results.throughput else None
    head = "3. Throughput of one worker"
    if pace:
        head += f" (upstream {pace.tps:g} tok/s x {pace.tokens} tokens per stream)"
    text = head + "\n" + table(headers, rows)
    if best is not None:
        text += (
            f"\n  plateau: {best.summary.aggregate_tps:,.0f} tokens/s delivered "
            f"at {best.streams} streams (app CPU {pct(best.app_cpu_share)})"
        )
    return text


def bytes_section(results: Results) -> str:
    rows = [
        [
            f"~{b.target_chars:,}",
            f"{b.chars:,}",
            f"{b.answer_bytes:,}",
            str(b.tokens),
            str(b.frames),
            f"{b.ws_bytes:,}",
            f"{b.ratio:.2f}",
            f"{b.turn_bytes:,}/{b.delta_bytes:,}/{b.final_bytes:,}",
            f"{b.delta_ratio:.2f}",
            b.verdict,
        ]
        for b in results.bytes
    ]
    headers = [
        "answer",
        "chars",
        "text bytes",
        "tokens",
        "frames",
        "ws bytes",
        "ws/text",
        "turn/deltas/final bytes",
        "deltas/text",
        "check",
    ]
    return f"4. Websocket bytes per byte of answer text ({results.bytes_pace})\n" + table(
        headers, rows
    )


def memory_section(results: Results) -> str:
    rows = [
        [
            lv.name,
            str(lv.streams),
            f"{lv.rss_idle_kb / 1024:.1f}",
            f"{lv.rss_before_kb / 1024:.1f}",
            f"{lv.rss_hwm_kb / 1024:.1f}",
            ms(lv.rss_per_stream_kb, 0),
            ms((lv.rss_hwm_kb - lv.rss_before_kb) / lv.streams, 0),
        ]
        for lv in results.levels
        if lv.streams > 1
    ]
    headers = [
        "level",
        "streams",
        "idle MB",
        "before level MB",
        "peak MB (VmHWM)",
        "(peak-idle)/N KB",
        "(peak-before)/N KB",
    ]
    return (
        "5. Worker RSS per open stream (idle = after warm-up, before any concurrent level; the\n"
        "   peak is reset per level; CPython keeps freed arenas, so a later level reuses an\n"
        "   earlier one's memory: (peak-idle)/N is the figure, (peak-before)/N its lower bound)\n"
        + table(headers, rows)
    )


def profile_section(profile: Profile | None) -> str:
    if profile is None:
        return "6. Profile: not run (use --profile)"
    if profile.error:
        return f"6. Profile: {profile.error}"
    total = max(profile.samples, 1)

    def share(counter: Any, limit: int) -> list[list[str]]:
        return [
            [label, str(n), f"{n / total * 100:.1f}%"] for label, n in counter.most_common(limit)
        ]

    ticks = max(profile.rate_hz * profile.duration_s, 1)
    threads = ", ".join(
        f"{name} thread active {n / ticks * 100:.0f}% of ticks"
        for name, n in profile.threads.most_common()
    )
    parts = [
        f"6. Profile of the worker (py-spy --nonblocking {profile.rate_hz} Hz over "
        f"{profile.duration_s:.1f} s: {profile.samples} non-idle samples; {threads})",
        table(["layer", "samples", "share"], share(profile.groups, 20)),
        "  top functions by self time",
        table(["function", "samples", "share"], share(profile.self_time, TOP_FUNCTIONS)),
        "  top functions by total time (inclusive)",
        table(["function", "samples", "share"], share(profile.total_time, TOP_FUNCTIONS + 10)),
    ]
    return "\n".join(parts)


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def summary_section(results: Results) -> str:
    one, two, five = results.level(1), results.level(200), results.level(500)
    rows: list[list[str]] = []
    if one:
        s = one.summary
        rows.append(
            [
                "latency p50/p99/max, 1 stream",
                f"{ms(s.p50_ms)}/{ms(s.p99_ms)}/{ms(s.max_ms)} ms",
                REF["latency_1"],
                "—",
                "—",
            ]
        )
        rows.append(
            [
                "first token, 1 stream p50/p99",
                f"{ms(s.first_p50_ms, 2)}/{ms(s.first_p99_ms, 2)} ms",
                REF["first_1"],
                "≤ 5 ms",
                _verdict(s.first_p99_ms <= TARGET_FIRST_MS),
            ]
        )
    if two:
        s = two.summary
        rows.append(
            [
                "first token, 200 streams p50/p99",
                f"{ms(s.first_p50_ms, 2)}/{ms(s.first_p99_ms, 2)} ms",
                "—",
                "≤ 5 ms",
                _verdict(s.first_p99_ms <= TARGET_FIRST_MS),
            ]
        )
        rows.append(
            [
                "latency p99, 200 streams",
                f"{ms(s.p99_ms)} ms",
                REF["p99_200"],
                "≤ 150 ms",
                _verdict(s.p99_ms <= TARGET_P99_200_MS),
            ]
        )
    if five:
        s = five.summary
        rows.append(["latency p99, 500 streams", f"{ms(s.p99_ms)} ms", REF["p99_500"], "—", "—"])
        rows.append(
            [
                "500 streams complete, in order",
                f"{s.complete}/{s.streams}",
                REF["order_500"],
                "all",
                _verdict(s.complete == s.streams),
            ]
        )
    all_levels = results.levels + results.throughput
    bad = sum(lv.summary.streams - lv.summary.complete for lv in all_levels)
    total = sum(lv.summary.streams for lv in all_levels)
    rows.append(
        [
            "answers lost/reordered/duplicated/stuck, all runs",
            f"{bad} of {total}",
            "0",
            "0",
            _verdict(bad == 0),
        ]
    )
    if (best := results.plateau) is not None:
        rows.append(
            [
                "ceiling (plateau), tokens/s",
                f"{best.summary.aggregate_tps:,.0f} at {best.streams} streams",
                REF["ceiling"],
                "—",
                "—",
            ]
        )
    if two:
        rows.append(
            [
                "app CPU per token, 200 streams",
                f"{ms(two.app_us_per_token, 0)} µs",
                REF["cpu_per_delta"],
                "—",
                "—",
            ]
        )
    for b in results.bytes:
        rows.append(
            [
                f"ws bytes / text byte, ~{b.target_chars:,} chars",
                f"{b.ratio:.2f}",
                "—",
                "flat with length",
                "—",
            ]
        )
    for lv in (two, five):
        if lv:
            rows.append(
                [
                    f"RSS per stream, {lv.streams} streams",
                    f"{ms(lv.rss_per_stream_kb, 0)} KB",
                    REF["rss"],
                    "—",
                    "—",
                ]
            )
    return "Summary\n" + table(["figure", "Streamside", "bare relay", "target", ""], rows)


def render(results: Results) -> str:
    c = results.config
    pin = results.pinning
    where = f"app on CPU {pin.app_cpus}; load on CPU {pin.load_cpus}" if pin.pinned else pin.note
    header = [
        "Streamside relay benchmark: one Daphne worker (DEBUG off), in-process channel layer,"
        " SQLite",
        f"  {where}",
        f"  app code: {results.revision}",
        f"  streams: {c['tps']:g} tok/s x {c['tokens']} tokens, ttft {c['ttft']:g} s, one token "
        f"per SSE chunk, send-stamped; starts staggered over {c['stagger_s']:g} s",
        f"  idle worker RSS after warm-up: {results.rss_idle_kb / 1024:.1f} MB",
    ]
    sections = ["\n".join(header), latency_section(results), first_token_section(results)]
    if results.throughput:
        sections.append(throughput_section(results))
    if results.bytes:
        sections.append(bytes_section(results))
    sections += [memory_section(results), profile_section(results.profile)]
    sections.append(problems_section(results))
    sections.append(summary_section(results))
    return "\n\n".join(sections)


def problems_section(results: Results) -> str:
    lines = ["Checks"]
    for lv in results.levels + results.throughput:
        for f in lv.facts:
            if not f.ok:
                lines.append(f"  {lv.name}: {f.marker}: {f.verdict}")
    if len(lines) == 1:
        lines.append("  every answer: final frame 'complete', deltas == upstream text, seq rising")
    lines = lines[:40]
    for lv in results.levels + results.throughput:
        share = lv.cpu.get("foreign_cpu_s", 0.0) / max(lv.cpu.get("wall_s", 1.0), 1e-9)
        if share > FOREIGN_WARN:
            lines.append(
                f"  WARNING {lv.name}: other processes used {share * 100:.0f}% of a core "
                "meanwhile; its figures are skewed, run again on a quiet machine"
            )
    if results.app_log_problems:
        lines.append(f"  worker log: {len(results.app_log_problems)} warning/error lines, e.g.")
        lines += [f"    {line[:160]}" for line in results.app_log_problems[:5]]
    else:
        lines.append("  worker log: no warnings or errors")
    lines += [f"  note: {note}" for note in results.notes]
    return "\n".join(lines)


def _plain(obj: Any) -> Any:
    """JSON-ready copy; per-stream sample lists are dropped (they are only inputs)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in {"facts", "latencies_ms", "delivery_times"}:
                continue
            out[f.name] = _plain(getattr(obj, f.name))
        for name in (
            "ratio",
            "delta_ratio",
            "app_cpu_share",
            "app_us_per_token",
            "app_us_per_frame",
            "rss_per_stream_kb",
        ):
            if hasattr(type(obj), name):
                out[name] = getattr(obj, name)
        return out
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(_plain(results), indent=2, ensure_ascii=False) + "\n")
