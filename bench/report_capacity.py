"""What one worker carries and what a stream costs, in ``bench.relay``'s report:
4. throughput (the plateau), 5. websocket bytes per answer byte, 6. memory per open stream.

Each figure is printed for the app and the baseline with their ratio: the baseline's cost is
the floor a relay cannot go under on this machine today.
"""

from __future__ import annotations

from bench.report_format import completeness, cpu_cols, ms, pairs, pct, ratio, table
from bench.report_results import Results


def throughput_section(results: Results) -> str:
    """Figure 4: every throughput level and each server's plateau, the ceiling of one worker."""
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
                completeness(lv),
                *cpu_cols(lv),
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
    """A byte count with separators, "—" when it could not be read."""
    return "—" if value is None else f"{value:,}"


def _pair(app: str, base: str | None) -> str:
    """``app/base``, "—" for a baseline figure that is missing."""
    return f"{app}/{'—' if base is None else base}"


def bytes_section(results: Results) -> str:
    """Figure 5: the payload (uncompressed) and what the wire carried, per answer length."""
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
    """Figure 6: memory per open stream, each concurrent level's peak over the idle RSS."""
    rows = []
    for app, base in pairs(results.levels, results.base_levels):
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
