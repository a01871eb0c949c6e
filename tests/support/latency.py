"""Per-token latency of live answers, to print (never to assert: a loaded two-core machine
would make any bound measure its scheduler, see ``waiting``).

The simulator stamps each chunk's text with the time it sent it (``stamp=1``:
``⟦<time.time()>⟧``); the socket notes when the frame holding it arrived (``Frame.at``,
monotonic). Both are this machine's clocks, so one offset between them is all it takes. A
stamp marks a chunk (several tokens when the simulator fell behind and coalesced them); a
frame holding several stamps counts each: a chunk that waited for its frame waited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

# The benchmark's reading of the same stamps, and its percentile.
from bench.analysis import STAMP, percentile
from tests.support.frames import Frame


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


def summary(values: Sequence[float]) -> str:
    """``p50 … ms, p99 … ms, max … ms over N chunks``."""
    if not values:
        return "no chunks"
    p50, p99, top = (percentile(values, q) * 1000 for q in (50, 99, 100))
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms over {len(values)} chunks"
