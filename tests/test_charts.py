"""The compare page's waits chart: valid, CSP-safe SVG that draws exactly the data it is given."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from chat.compare.charts import ChartData, TrialWaits, median, nice_ticks, render_waits_chart

SVG = "{http://www.w3.org/2000/svg}"

ONE = ChartData(stream=[TrialWaits(0.41, 3.2)], nostream=[TrialWaits(2.8, 2.8)])
FIVE = ChartData(
    stream=[TrialWaits(0.41, 10.2), TrialWaits(0.38, 9.1), TrialWaits(0.5, 11.0)]
    + [TrialWaits(0.45, 9.6), TrialWaits(0.39, 10.4)],
    nostream=[TrialWaits(9.8, 9.8), TrialWaits(9.2, 9.2), TrialWaits(10.5, 10.5)]
    + [TrialWaits(9.7, 9.7), TrialWaits(9.9, 9.9)],
)
FAILURES = ChartData(
    stream=[TrialWaits(0.4, 6.0), TrialWaits(None, None), TrialWaits(0.6, None)],
    nostream=[TrialWaits(5.5, 5.5), TrialWaits(None, 12.5), TrialWaits(math.nan, -1.0)],
)
ALL_NONE = ChartData(
    stream=[TrialWaits(None, None), TrialWaits(None, None)],
    nostream=[TrialWaits(None, None), TrialWaits(None, None)],
)
EMPTY = ChartData(stream=[], nostream=[])

CASES = [
    pytest.param(ONE, id="one-trial"),
    pytest.param(FIVE, id="five-trials"),
    pytest.param(FAILURES, id="with-failures"),
    pytest.param(ALL_NONE, id="all-none"),
    pytest.param(EMPTY, id="no-trials"),
]


def usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [el for el in root.iter() if name in el.get("class", "").split()]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([3.0, 1.0, 2.0], 2.0, id="odd"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 2.5, id="even"),
        pytest.param([0.41], 0.41, id="single"),
        pytest.param([], None, id="empty"),
    ],
)
def test_median(values: list[float], expected: float | None) -> None:
    assert median(values) == expected


@pytest.mark.parametrize("data", CASES)
def test_svg_is_well_formed_and_accessible(data: ChartData) -> None:
    svg = render_waits_chart(data)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    title = root.find(f"{SVG}title")
    assert title is not None and title.text
    assert render_waits_chart(data) == svg  # deterministic


@pytest.mark.parametrize("data", CASES)
def test_no_inline_styles(data: ChartData) -> None:
    svg = render_waits_chart(data)
    assert "style=" not in svg
    assert "<style" not in svg


@pytest.mark.parametrize("data", CASES)
def test_one_marker_per_first_text_and_one_bar_per_complete(data: ChartData) -> None:
    root = ET.fromstring(render_waits_chart(data))
    for key, waits in (("chart-stream", data.stream), ("chart-nostream", data.nostream)):
        markers = [el for el in with_class(root, "chart-marker") if key in el.get("class")]
        bars = [el for el in with_class(root, "chart-bar") if key in el.get("class")]
        assert len(markers) == sum(usable(w.first_text_s) for w in waits)
        assert len(bars) == sum(usable(w.complete_s) for w in waits)


def test_failed_values_are_labelled_in_their_lane() -> None:
    root = ET.fromstring(render_waits_chart(FAILURES))
    notes = ["".join(el.itertext()) for el in with_class(root, "chart-failed")]
    # stream: run 2 (both), run 3 (complete); nostream: run 2 (first text), run 3 (NaN, negative)
    assert len(notes) == 4
    assert sum("failed" in note for note in notes) == 3
    assert "12.5 s, no first text" in notes


@pytest.mark.parametrize("data", [ALL_NONE, EMPTY], ids=["all-none", "no-trials"])
def test_nothing_to_draw_says_no_data(data: ChartData) -> None:
    root = ET.fromstring(render_waits_chart(data))
    assert "no data" in "".join(root.itertext())
    assert "no data" in root.get("aria-label")
    assert not with_class(root, "chart-bar") and not with_class(root, "chart-marker")


@pytest.mark.parametrize("data", [ONE, FIVE, FAILURES], ids=["one", "five", "failures"])
def test_axis_ticks_cover_the_largest_value(data: ChartData) -> None:
    root = ET.fromstring(render_waits_chart(data))
    ticks = [float(el.text) for el in with_class(root, "chart-tick")]
    values = [
        v
        for w in (*data.stream, *data.nostream)
        for v in (w.first_text_s, w.complete_s)
        if usable(v)
    ]
    assert 4 <= len(ticks) <= 6
    assert ticks[0] == 0 and ticks == sorted(ticks)
    assert ticks[-1] >= max(values)
    assert len(with_class(root, "chart-grid")) == 1


@pytest.mark.parametrize(
    ("vmax", "expected"),
    [
        pytest.param(0.41, [0, 0.1, 0.2, 0.3, 0.4, 0.5], id="sub-second"),
        pytest.param(1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0], id="exactly-one"),
        pytest.param(2.6, [0, 1, 2, 3], id="unit-step"),
        pytest.param(9.8, [0, 2, 4, 6, 8, 10], id="ten"),
        pytest.param(12.5, [0, 5, 10, 15], id="five-step"),
        pytest.param(0.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0], id="zero"),
    ],
)
def test_nice_ticks(vmax: float, expected: list[float]) -> None:
    ticks, _ = nice_ticks(vmax)
    assert ticks == expected


def test_aria_label_and_median_lines_show_both_medians() -> None:
    root = ET.fromstring(render_waits_chart(FIVE))
    label = root.get("aria-label")
    assert "0.41 s with streaming on" in label
    assert "9.8 s with streaming off" in label
    legend = "".join(with_class(root, "chart-median-label")[0].itertext())
    assert legend == "median first text: 0.41 s (on) / 9.8 s (off)"
    assert len(with_class(root, "chart-median")) == 2


def test_mode_without_any_first_text_has_no_median_line() -> None:
    data = ChartData(stream=[TrialWaits(None, None)], nostream=[TrialWaits(3.0, 3.0)])
    root = ET.fromstring(render_waits_chart(data))
    lines = with_class(root, "chart-median")
    assert [el.get("class") for el in lines] == ["chart-median chart-nostream"]
    assert "n/a (on)" in "".join(with_class(root, "chart-median-label")[0].itertext())


def test_generated_text_is_escaped() -> None:
    class Hostile(float):
        """A number whose formatting injects markup: only escaping keeps it out of the SVG."""

        def __format__(self, spec: str) -> str:
            return '<script>alert("x")</script>&'

    data = ChartData(stream=[TrialWaits(Hostile(0.5), Hostile(2.0))], nostream=[TrialWaits(1, 1)])
    svg = render_waits_chart(data)
    assert "<script" not in svg
    root = ET.fromstring(svg)
    notes = ["".join(el.itertext()) for el in with_class(root, "chart-value")]
    assert '<script>alert("x")</script>& s' in notes  # escaped in the markup, intact as text


def test_coordinates_have_at_most_one_decimal() -> None:
    root = ET.fromstring(render_waits_chart(FIVE))
    for el in root.iter():
        for attr in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height"):
            value = el.get(attr)
            if value is not None:
                assert len(value.partition(".")[2]) <= 1, (el.tag, attr, value)


def test_five_trials_fit_the_height_budget_and_one_trial_shrinks() -> None:
    five = ET.fromstring(render_waits_chart(FIVE, height=260))
    one = ET.fromstring(render_waits_chart(ONE, height=260))
    assert float(five.get("height")) <= 260
    assert float(one.get("height")) < float(five.get("height"))


def test_unequal_trial_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="trials"):
        ChartData(stream=[TrialWaits(1.0, 2.0)], nostream=[])


def test_zero_second_answer_is_not_a_failure() -> None:
    data = ChartData(stream=[TrialWaits(0.0, 0.0)], nostream=[TrialWaits(0.0, 0.0)])
    root = ET.fromstring(render_waits_chart(data))
    assert len(with_class(root, "chart-bar")) == 2
    assert not with_class(root, "chart-failed")
