"""Figure 8 of ``bench.relay``'s report: where the worker's time goes (``--profile``).

py-spy's samples are grouped by layer first (what to look at), then the top functions by
self and by total time (where exactly).
"""

from __future__ import annotations

from typing import Any

from bench.profile import Profile
from bench.report_format import table

TOP_FUNCTIONS = 15


def profile_section(profile: Profile | None) -> str:
    """Figure 8, or why it is missing (not asked for, or py-spy failed)."""
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
