"""Figure 7 of ``bench.relay``'s report: the stuck reader (memory growth, other sockets' p99).

Its table says how the stuck socket was filled and how it ended as well as the figures: a
figure without them cannot tell a server that bounds a slow reader from one never reached.
"""

from __future__ import annotations

from bench.report_format import completeness, ms, signed_pct, table
from bench.report_results import Results


def stuck_section(results: Results) -> str:
    """Figure 7: the other sockets' p99 alone and beside the stuck one, and the RSS growth."""
    rows = [
        [
            r.who,
            str(r.clean.streams),
            ms(r.clean.summary.p99_ms),
            ms(r.stuck.summary.p99_ms),
            signed_pct(r.p99_change),
            f"{r.rss_growth_mb:.1f}",
            f"{r.clean_growth_mb:.1f}",
            f"{completeness(r.clean)}, {completeness(r.stuck)}",
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
