"""Answer timelines (``chat.timeline``): a few bytes per frame, read back exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chat.timeline import Recorder, Step, decode, encode

steps = st.lists(
    st.tuples(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**5)), max_size=300
)


@given(steps)
def test_any_timeline_reads_back_as_it_was_written(raw: list[tuple[int, int, int]]) -> None:
    at, written = 0, []
    for gap, text, reasoning in raw:
        at += gap
        written.append(Step(at, text, reasoning))
    assert decode(encode(written)) == written


def test_a_frame_at_40_tokens_a_second_costs_about_three_bytes() -> None:
    recorder = Recorder()
    for n in range(200):
        recorder.add(250 + 25 * n, 4)
    assert len(bytes(recorder)) <= 2 + 3 * 200


def test_no_timeline_and_an_unknown_version_read_as_none() -> None:
    assert decode(None) == [] and decode(b"") == [] and decode(b"\x02\x01\x01\x01") == []


def test_a_late_clock_reading_never_goes_back_in_time() -> None:
    recorder = Recorder()
    recorder.add(100, 3)
    recorder.add(90, 2)  # read a moment out of order: kept at the last frame's time
    assert decode(bytes(recorder)) == [Step(100, 3), Step(100, 2)]
