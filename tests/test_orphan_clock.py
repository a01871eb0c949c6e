"""An answer's worker is judged alive or dead by the database's clock, never by comparing one
worker's clock with the heartbeat another wrote: a clock skewed or stepped by an hour (more
than ``STREAM_ORPHAN_AFTER``) neither interrupts a live answer nor keeps a dead one "streaming".

Played on SQLite and on the machine's PostgreSQL, each in a process of its own whose clock is
moved in-process (``tests/support/clock_skew.py``: a real clock step cannot be produced here).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.clock_skew import CLOCKS, played_on

STILL_STREAMING = (
    "streaming: 'Once upon a time'; a new send: "
    "An answer is still streaming: stop it or wait for it to finish."
)
INTERRUPTED = "error interrupted: 'Once upon a time'; a new send: accepted"


def expected() -> dict[str, str]:
    """What the reader sees: every live answer still streaming, with its text and a new send
    refused, whichever clocks wrote and read it; every dead one interrupted, its text kept,
    and the conversation free again; the operator's listing agreeing on every clock."""
    seen = {
        f"answers_in_flight by a worker {judge}": " ".join(["live"] * 6 + ["stale"] * 3)
        for judge in CLOCKS
    }
    for writer in CLOCKS:
        for judge in CLOCKS:
            if writer != judge:
                seen[f"written by a worker {writer}, seen by one {judge}"] = STILL_STREAMING
    for judge in CLOCKS:
        seen[f"its worker dead, seen by one {judge}"] = INTERRUPTED
    return seen


def test_skewed_clocks_on_sqlite(tmp_path: Path) -> None:
    assert played_on(f"sqlite:///{tmp_path / 'skew.sqlite3'}") == expected()


def test_skewed_clocks_on_postgresql(database: str) -> None:
    assert played_on(database) == expected()
