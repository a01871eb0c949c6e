"""The plain-text report of ``bench.relay`` and the JSON dump.

Every figure is printed as app / baseline with their ratio: the baseline relay ran in the same
run on the same machine, and machines here vary several-fold from day to day, so the ratio is
the figure to compare across days. The summary marks the issue's targets PASS/FAIL.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.phases import EnterResult, LevelResult, StuckResult
from bench.procs import Pinning
from bench.profile import Profile

TOP_FUNCTIONS = 15
FOREIGN_WARN = 0.15  # other processes' CPU share that makes a level's figures suspect

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


@dataclass
class BytesResult:
    """What one answer of a given length cost in bytes: its frames' payload (uncompressed, split
    by frame kind) and what crossed the wire (the TCP bytes its socket received)."""

    target_chars: int
    tokens: int
    chars: int
    answer_bytes: int
    frames: int
    payload_bytes: int  # every frame's payload + header, as the client library hands it over
    wire_bytes: int | None  # TCP bytes received from the send to the final frame (None: unread)
    extensions: str | None  # the Sec-WebSocket-Extensions accepted ("" none, None unknown)
    turn_bytes: int
    delta_bytes: int
    final_bytes: int
    verdict: str

    def _per_answer_byte(self, value: int | None) -> float:
        return value / self.answer_bytes if value is not None and self.answer_bytes else math.nan

    @property
    def payload_ratio(self) -> float:
        return self._per_answer_byte(self.payload_bytes)

    @property
    def wire_ratio(self) -> float:
        return self._per_answer_byte(self.wire_bytes)

    @property
    def delta_ratio(self) -> float:
        return self._per_answer_byte(self.delta_bytes)

    @property
    def compression(self) -> str:
        """Short name of what was negotiated: "deflate", "none" or "unknown"."""
        if self.extensions is None:
            return "unknown"
        if "permessage-deflate" in self.extensions:
            return "deflate"
        return self.extensions or "none"


@dataclass
class Results:
    """Everything one run measured (what ``--json`` writes); ``base_*`` are the baseline's."""

    config: dict[str, Any]
    pinning: Pinning
    revision: str = ""
    levels: list[LevelResult] = field(default_factory=list)
    base_levels: list[LevelResult] = field(default_factory=list)
    bytes: list[BytesResult] = field(default_factory=list)
    base_bytes: list[BytesResult] = field(default_factory=list)
    bytes_pace: str = ""
    bytes_tps: float = math.nan
    throughput: list[LevelResult] = field(default_factory=list)
    base_throughput: list[LevelResult] = field(default_factory=list)
    stuck: list[StuckResult] = field(default_factory=list)
    enter: list[EnterResult] = field(default_factory=list)
    profile: Profile | None = None
    rss_idle_kb: int = 0
    base_rss_idle_kb: int = 0
    app_log_problems: list[str] = field(default_factory=list)
    baseline_log_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def level(self, streams: int, base: bool = False) -> LevelResult | None:
        levels = self.base_levels if base else self.levels
        return next((lv for lv in levels if lv.streams == streams), None)

    def plateau(self, base: bool = False) -> LevelResult | None:
        return plateau(self.base_throughput if base else self.throughput)

    def target_levels(self) -> list[tuple[int, str]]:
        """The concurrent levels the p99/CPU targets apply to: 100 and 200 streams, or (in a
        smoke or quick run) the largest concurrent level run, labelled as standing in."""
        run = {lv.streams for lv in self.levels}
        chosen = [(n, f"{n} streams") for n in TARGET_LEVELS if n in run]
        if not chosen and (others := [n for n in run if n > 1]):
            chosen = [(max(others), f"{max(others)} streams (stands in for 100/200)")]
        return chosen

    def broken(self) -> list[str]:
        """Why the bench itself measured nothing somewhere (exit non-zero even in smoke)."""
        reasons = []
        for lv in self.levels + self.base_levels + self.throughput + self.base_throughput:
            if lv.summary.streams and lv.summary.complete == 0:
                reasons.append(f"{lv.who} {lv.name}: no answer arrived complete")
        for enter in self.enter:
            if not enter.samples_ms:
                reasons.append(f"{enter.who} Enter -> upstream: no request was timed")
        return reasons


def plateau(levels: Sequence[LevelResult]) -> LevelResult | None:
    rated = [lv for lv in levels if not math.isnan(lv.summary.aggregate_tps)]
    return max(rated, key=lambda lv: lv.summary.aggregate_tps, default=None)


def ms(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value * 100:.0f}%"


def ratio(app: float | None, base: float | None) -> str:
    """``×r`` = app / baseline (above 1: the app costs more)."""
    if app is None or base is None or math.isnan(app) or math.isnan(base) or base == 0:
        return "—"
    return f"×{app / base:.2f}"


def nan_to(value: float | None) -> float:
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


def _pairs(
    app: Sequence[LevelResult], base: Sequence[LevelResult]
) -> list[tuple[LevelResult, LevelResult | None]]:
    """Each app level with the baseline's level of the same name (None if it did not run)."""
    by_name = {lv.name: lv for lv in base}
    return [(lv, by_name.get(lv.name)) for lv in app]


def latency_section(results: Results) -> str:
    rows = []
    for app, base in _pairs(results.levels, results.base_levels):
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
                    _problems(lv),
                    f"{ms(s.delivered_tps_per_stream)}/{ms(s.upstream_tps_per_stream)}"
                    f"/{lv.pace.tps:g}",
                    f"{ms(s.aggregate_tps, 0)}/{ms(s.upstream_aggregate_tps, 0)}/{s.offered_tps:g}",
                    ms(lv.app_us_per_token, 0),
                    *_cpu_cols(lv),
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
    for app, base in _pairs(results.levels, results.base_levels):
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
    rows = []
    for app, base in _pairs(results.levels, results.base_levels):
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


def throughput_section(results: Results) -> str:
    rows = []
    for lv in results.throughput + results.base_throughput:
        s = lv.summary
        rows.append(
            [
                str(lv.streams),
                lv.who,
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
        "server",
        "offered tok/s",
        "delivered tok/s",
        "upstream sent tok/s",
        "span s",
        "p50 ms",
        "p99 ms",
        "frames/ans",
        "µs/token",
        "µs/frame",
        "complete",
        "CPU",
        "cpu0",
        "cpu1",
        "others",
    ]
    pace = results.throughput[0].pace if results.throughput else None
    head = "4. Throughput of one worker"
    if pace:
        head += f" (upstream {pace.tps:g} tok/s x {pace.tokens} tokens per stream)"
    text = head + "\n" + table(headers, rows)
    app, base = results.plateau(), results.plateau(base=True)
    for lv in (app, base):
        if lv is not None:
            text += (
                f"\n  {lv.who} plateau: {lv.summary.aggregate_tps:,.0f} tokens/s delivered "
                f"at {lv.streams} streams (CPU {pct(lv.app_cpu_share)})"
            )
    if app and base:
        text += f"\n  app/baseline: {ratio(app.summary.aggregate_tps, base.summary.aggregate_tps)}"
    return text


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _pair(app: str, base: str | None) -> str:
    return f"{app}/{'—' if base is None else base}"


def bytes_section(results: Results) -> str:
    base = {b.target_chars: b for b in results.base_bytes}
    rows = []
    for b in results.bytes:
        other = base.get(b.target_chars)
        rows.append(
            [
                f"~{b.target_chars:,}",
                f"{b.chars:,}",
                f"{b.answer_bytes:,}",
                str(b.tokens),
                _pair(str(b.frames), other and str(other.frames)),
                _pair(f"{b.payload_bytes:,}", other and f"{other.payload_bytes:,}"),
                _pair(ms(b.payload_ratio, 2), other and ms(other.payload_ratio, 2)),
                _pair(_count(b.wire_bytes), other and _count(other.wire_bytes)),
                _pair(ms(b.wire_ratio, 2), other and ms(other.wire_ratio, 2)),
                ratio(b.wire_ratio, other.wire_ratio if other else None),
                f"{b.turn_bytes:,}/{b.delta_bytes:,}/{b.final_bytes:,}",
                _pair(b.verdict, other and other.verdict),
            ]
        )
    headers = [
        "answer",
        "chars",
        "text bytes",
        "tokens",
        "frames app/base",
        "payload bytes app/base",
        "payload/text app/base",
        "wire bytes app/base",
        "wire/text app/base",
        "wire ratio",
        "app turn/deltas/final payload",
        "check app/base",
    ]
    lines = [
        f"5. Websocket bytes per byte of answer text ({results.bytes_pace}; the client offers "
        "permessage-deflate as browsers do)",
        "   payload = every frame's payload + header as the client library hands it over "
        "(decompressed);",
        "   wire = TCP bytes the answer's own socket received from the send to the final frame "
        "(TCP_INFO tcpi_bytes_received; IP/TCP headers not counted)",
        table(headers, rows),
    ]
    for who, answers in (("app", results.bytes), ("baseline", results.base_bytes)):
        offers = sorted({b.extensions for b in answers}, key=str)
        shown = ", ".join("not read" if e is None else e or "none" for e in offers)
        lines.append(f"  {who}: Sec-WebSocket-Extensions accepted: {shown or '—'}")
    return "\n".join(lines)


def memory_section(results: Results) -> str:
    rows = []
    for app, base in _pairs(results.levels, results.base_levels):
        if app.streams <= 1:
            continue
        rows.append(
            [
                app.name,
                str(app.streams),
                f"{app.rss_before_kb / 1024:.1f}/{base.rss_before_kb / 1024:.1f}"
                if base
                else f"{app.rss_before_kb / 1024:.1f}",
                f"{app.rss_hwm_kb / 1024:.1f}/{base.rss_hwm_kb / 1024:.1f}"
                if base
                else f"{app.rss_hwm_kb / 1024:.1f}",
                f"{ms(app.rss_per_stream_kb, 0)}/{ms(base.rss_per_stream_kb, 0) if base else '—'}",
                ratio(app.rss_per_stream_kb, base.rss_per_stream_kb if base else None),
            ]
        )
    headers = [
        "level",
        "streams",
        "before level MB app/base",
        "peak MB (VmHWM) app/base",
        "(peak-idle)/N KB app/base",
        "ratio",
    ]
    return (
        f"6. RSS per open stream (idle after warm-up: app {results.rss_idle_kb / 1024:.1f} MB, "
        f"baseline {results.base_rss_idle_kb / 1024:.1f} MB; the peak is reset per level;\n"
        "   CPython keeps freed arenas, so a later level reuses an earlier one's memory)\n"
        + table(headers, rows)
    )


def stuck_section(results: Results) -> str:
    rows = [
        [
            r.who,
            str(r.clean.streams),
            ms(r.clean.summary.p99_ms),
            ms(r.stuck.summary.p99_ms),
            _signed_pct(r.p99_change),
            f"{r.rss_growth_mb:.1f}",
            f"{r.clean_growth_mb:.1f}",
            f"{_problems(r.clean)}, {_problems(r.stuck)}",
        ]
        for r in results.stuck
    ]
    headers = [
        "server",
        "streams",
        "p99 ms alone",
        "p99 ms beside it",
        "change",
        "RSS growth MB",
        "growth alone MB",
        "complete alone, beside",
    ]
    c = results.config
    fill = " ".join(f"{k}={v}" for k, v in c.get("stuck_fill_sim", {}).items())
    lines = [
        "7. Stuck reader: one more socket (4 KB receive buffer, one-message client queue) stops "
        f"reading. First fast answers (#sim {fill})",
        "   fill the server kernel's send buffer (until it stops growing, "
        f"{c.get('stuck_fill_s', 0):g} s at most), then the measured streams run beside one "
        f"long answer at {c.get('stuck_long_tps', 0):g} tok/s.",
        "   RSS growth = the worker's peak during the phase (fill included) - its RSS when "
        "the phase began",
        table(headers, rows),
    ]
    for r in results.stuck:
        lines.append(f"  {r.who}: fill: {r.fill}")
        lines.append(f"  {r.who}: {r.fate}; {r.upstream}")
    return "\n".join(lines)


def profile_section(profile: Profile | None) -> str:
    if profile is None:
        return "8. Profile: not run (use --profile)"
    if profile.error:
        return f"8. Profile: {profile.error}"
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
        f"8. Profile of the worker (py-spy --nonblocking {profile.rate_hz} Hz over "
        f"{profile.duration_s:.1f} s: {profile.samples} non-idle samples; {threads})",
        table(["layer", "samples", "share"], share(profile.groups, 20)),
        "  top functions by self time",
        table(["function", "samples", "share"], share(profile.self_time, TOP_FUNCTIONS)),
        "  top functions by total time (inclusive)",
        table(["function", "samples", "share"], share(profile.total_time, TOP_FUNCTIONS + 10)),
    ]
    return "\n".join(parts)


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
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def within(value: float, limit: float) -> bool | None:
    """``value <= limit``, or None when either was not measured."""
    if math.isnan(value) or math.isnan(limit):
        return None
    return value <= limit


def checks_table(checks: Sequence[Check], smoke: bool) -> str:
    rows = [[c.figure, c.app, c.baseline, c.ratio, c.target, verdict(c.ok)] for c in checks]
    head = "Summary (app / baseline; targets from bench/README.md)"
    if smoke:
        head += " - smoke run: too short to judge, targets are shown, not enforced"
    return head + "\n" + table(["figure", "app", "baseline", "ratio", "target", ""], rows)


def _latency_checks(results: Results) -> list[Check]:
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
                _signed_pct(app_stuck.p99_change),
                _signed_pct(b_change),
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


def _signed_pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value * 100:+.0f}%"


def summary_section(results: Results) -> str:
    checks = _latency_checks(results) + _other_checks(results)
    return checks_table(checks, bool(results.config.get("smoke")))


def render(results: Results) -> str:
    c = results.config
    pin = results.pinning
    where = (
        f"servers on CPU {pin.app_cpus}; load on CPU {pin.load_cpus}" if pin.pinned else pin.note
    )
    header = [
        "Streamside relay benchmark: one Daphne worker (DEBUG off), in-process channel layer,"
        " SQLite, against the baseline relay in the same run",
        "  baseline: bench.baseline (same Daphne, one process; one shared aiohttp session, one"
        ' {"d": delta} frame per delta; no DB, no channel layer, no HTML)',
        "  every figure: app, baseline and app/baseline (×1.00 = as cheap as the bare relay)",
        f"  {where}",
        f"  app code: {results.revision}",
        f"  streams: {c['tps']:g} tok/s x {c['tokens']} tokens, ttft {c['ttft']:g} s, one token "
        f"per SSE chunk, send-stamped; starts staggered over {c['stagger_s']:g} s",
    ]
    sections = ["\n".join(header), latency_section(results), first_token_section(results)]
    if results.enter:
        sections.append(enter_section(results.enter, "SQLite"))
    if results.throughput:
        sections.append(throughput_section(results))
    if results.bytes:
        sections.append(bytes_section(results))
    sections.append(memory_section(results))
    if results.stuck:
        sections.append(stuck_section(results))
    sections.append(profile_section(results.profile))
    sections.append(problems_section(results))
    sections.append(summary_section(results))
    return "\n\n".join(sections)


def problems_section(results: Results) -> str:
    lines = ["Checks"]
    everything = (
        results.levels
        + results.base_levels
        + results.throughput
        + results.base_throughput
        + [lv for r in results.stuck for lv in (r.clean, r.stuck)]
    )
    for lv in everything:
        for f in lv.facts:
            if not f.ok:
                lines.append(f"  {lv.who} {lv.name}: {f.marker}: {f.verdict}")
    if len(lines) == 1:
        lines.append("  every answer: final frame 'complete', deltas == upstream text, seq rising")
    lines = lines[:40]
    for lv in everything:
        share = lv.cpu.get("foreign_cpu_s", 0.0) / max(lv.cpu.get("wall_s", 1.0), 1e-9)
        if share > FOREIGN_WARN:
            lines.append(
                f"  WARNING {lv.who} {lv.name}: other processes used {share * 100:.0f}% of a "
                "core meanwhile; its figures are skewed, run again on a quiet machine"
            )
    lines += log_lines("app worker", results.app_log_problems)
    lines += log_lines("baseline", results.baseline_log_problems)
    lines += [f"  note: {note}" for note in results.notes]
    return "\n".join(lines)


def log_lines(who: str, problems: Sequence[str]) -> list[str]:
    if not problems:
        return [f"  {who} log: no warnings or errors"]
    return [f"  {who} log: {len(problems)} warning/error lines, e.g."] + [
        f"    {line[:160]}" for line in problems[:5]
    ]


def _plain(obj: Any) -> Any:
    """JSON-ready copy; per-stream sample lists are dropped (they are only inputs)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in {"facts", "latencies_ms", "delivery_times", "protocol"}:
                continue
            out[f.name] = _plain(getattr(obj, f.name))
        for name, value in _properties(obj):
            out[name] = _plain(value)
        return out
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _properties(obj: Any) -> Iterable[tuple[str, Any]]:
    """The derived figures (ratios, per-token costs) a reader of the JSON wants too."""
    for name in dir(type(obj)):
        attribute = getattr(type(obj), name, None)
        if isinstance(attribute, property) and not name.startswith("_"):
            getter: Callable[[Any], Any] = attribute.fget  # type: ignore[assignment]
            yield name, getter(obj)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(_plain(results), indent=2, ensure_ascii=False) + "\n")
