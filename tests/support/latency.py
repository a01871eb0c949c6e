"""Per-token latency of live answers, to print (never to assert: a loaded two-core machine
would make any bound measure its scheduler, see ``waiting``).

The simulator stamps each chunk's text with the time it sent it (``stamp=1``:
``⟦<time.time()>⟧``); the socket notes when the frame holding it arrived (``Frame.at``,
monotonic). Both are this machine's clocks, so one offset between them is all it takes. A
stamp marks a chunk (several tokens when the simulator fell behind and coalesced them); a
frame holding several stamps counts each: a chunk that waited for its frame waited.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence

from tests.support.frames import Frame

STAMP = re.compile(r"⟦(\d+\.\d+)⟧")


def token_latencies(frames: Iterable[Frame], answer_id: int) -> list[float]:
    """Seconds from each chunk's send stamp to the arrival of the frame that carried it."""
    wall = time.time() - time.monotonic()
    return [
        frame.at + wall - float(stamp)
        for frame in frames
        for answer, _, text in frame.deltas
        if answer == answer_id
        for stamp in STAMP.findall(text)
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0-100); NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> str:
    """``p50 … ms, p99 … ms, max … ms over N chunks``."""
    if not values:
        return "no chunks"
    p50, p99, top = (percentile(values, q) * 1000 for q in (50, 99, 100))
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms over {len(values)} chunks"
