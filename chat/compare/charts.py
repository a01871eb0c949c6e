"""Server-rendered SVG chart of the streaming-on vs streaming-off comparison.

The compare page shows, per trial, how long each mode made the reader wait: until the first text
appeared, and until the answer was complete. A chart makes the point of streaming visible at a
glance (reading starts long before the answer is done), so it is drawn here as a plain SVG
string: no JavaScript and no chart library to ship, and no inline styles, because the site's
Content-Security-Policy forbids them. Colours and sizes are presentation attributes, and every
element carries a ``chart-*`` class so the site CSS can restyle it; text and axes use
``currentColor`` so the chart follows the page's colour scheme (dark mode included).

Everything here is pure and deterministic: the same data always gives the same bytes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.translation import gettext, ngettext, pgettext

STREAM_COLOUR = "#1f5fd6"
NOSTREAM_COLOUR = "#c2410c"

# Layout, in SVG user units (px at 1:1). The left margin holds "Run k" and the lane names; the
# right margin holds the value written after each bar.
_LEFT = 132.0
_RIGHT = 52.0
_TOP = 46.0
_BOTTOM = 36.0
_ROW_GAP = 6.0
_MIN_LANE = 14.0
_MAX_LANE = 24.0
_MARKER_R = 4.5
_BAR_H = 4.0
_MAX_INTERVALS = 5


@dataclass(frozen=True, slots=True)
class TrialWaits:
    """One mode's waits in one trial, in seconds as measured in the browser."""

    first_text_s: float | None  # None: that side failed before any text
    complete_s: float | None  # None: failed, or not finished


@dataclass(frozen=True, slots=True)
class ChartData:
    """Both panes' waits, one entry per trial, in trial order."""

    stream: list[TrialWaits]  # left pane, streaming on
    nostream: list[TrialWaits]  # right pane, streaming off
    # A "setups" run: what each pane ran (left, right), for lanes labelled by setup instead
    # of streaming on and off.
    names: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        # Both panes run every trial together; unequal lengths mean the caller paired them wrong,
        # and a chart silently padding one side would hide that.
        if len(self.stream) != len(self.nostream):
            raise ValueError(
                f"stream has {len(self.stream)} trials but nostream has {len(self.nostream)}"
            )


@dataclass(frozen=True, slots=True)
class _Mode:
    key: str  # CSS class suffix
    name: str  # lane label
    short: str  # "on" / "off" in the median label
    colour: str
    waits: list[TrialWaits]


def median(values: Sequence[float]) -> float | None:
    """Middle value (mean of the two middle ones for an even count); None when there is none.

    The median, not the mean, summarises a handful of trials: one slow outlier (a cold cache, a
    queued request) should not move the headline number.
    """
    if not values:
        return None
    return float(statistics.median(values))


def render_waits_chart(data: ChartData, *, width: int = 640, height: int = 260) -> str:
    """Return a self-contained ``<svg>`` drawing each trial's waits for both modes.

    One row per trial with two lanes (streaming on, streaming off). In each lane a thin bar runs
    from 0 to the complete wait and a bold dot marks the first-text wait, the moment reading
    could begin. Dashed vertical lines mark each mode's median first-text wait.

    ``height`` is a budget: the chart is never taller, unless that would squeeze lanes below a
    readable size (many trials), and it shrinks to fit when there are few trials, so one trial
    does not leave a tall empty box. Missing, negative or non-finite values are not drawn; the
    lane says "failed" instead (or "no first text" after an answer that arrived without one).
    The text is escaped, although all of it is generated here from numbers.
    """
    if data.names is not None:
        left, right = data.names
        modes = (
            _Mode("stream", _short(left), pgettext("setup", "A"), STREAM_COLOUR, data.stream),
            _Mode(
                "nostream", _short(right), pgettext("setup", "B"), NOSTREAM_COLOUR, data.nostream
            ),
        )
    else:
        modes = (
            _Mode(
                "stream",
                gettext("Streaming on"),
                pgettext("streaming", "on"),
                STREAM_COLOUR,
                data.stream,
            ),
            _Mode(
                "nostream",
                gettext("Streaming off"),
                pgettext("streaming", "off"),
                NOSTREAM_COLOUR,
                data.nostream,
            ),
        )
    trials = len(data.stream)
    firsts = {
        m.key: [v for w in m.waits if (v := _valid(w.first_text_s)) is not None] for m in modes
    }
    completes = {
        m.key: [v for w in m.waits if (v := _valid(w.complete_s)) is not None] for m in modes
    }
    medians = {m.key: median(firsts[m.key]) for m in modes}
    summary = _summary(
        modes, trials, medians, {m.key: median(completes[m.key]) for m in modes}, data.names
    )
    everything = [v for vs in (*firsts.values(), *completes.values()) for v in vs]
    if not everything:
        return _no_data_svg(width, summary, data.names)

    lane_budget = (height - _TOP - _BOTTOM - _ROW_GAP * (trials - 1)) / (2 * trials)
    lane = min(max(lane_budget, _MIN_LANE), _MAX_LANE)
    plot_top = _TOP
    plot_bottom = plot_top + 2 * trials * lane + _ROW_GAP * (trials - 1)
    total_h = plot_bottom + _BOTTOM
    plot_left, plot_right = _LEFT, width - _RIGHT
    ticks, decimals = nice_ticks(max(everything))
    axis_max = ticks[-1]

    def x_of(seconds: float) -> float:
        return plot_left + seconds / axis_max * (plot_right - plot_left)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-waits" role="img"'
        f' width="{width}" height="{_n(total_h)}" viewBox="0 0 {width} {_n(total_h)}"'
        f' font-size="12" fill="currentColor" aria-label="{_esc(summary)}">',
        f"<title>{_title(data.names)}</title>",
    ]
    out += _legend(plot_left, modes, medians)

    # Row bands, then the grid, so both sit behind the data.
    for k in range(trials):
        row_top = plot_top + k * (2 * lane + _ROW_GAP)
        if k % 2 == 0:
            out.append(
                f'<rect class="chart-band" x="0" y="{_n(row_top - _ROW_GAP / 2)}"'
                f' width="{width}" height="{_n(2 * lane + _ROW_GAP)}"'
                f' fill="currentColor" opacity="0.04"/>'
            )
    out.append('<g class="chart-grid" stroke="currentColor" stroke-width="1" opacity="0.15">')
    for tick in ticks:
        x = _n(x_of(tick))
        out.append(f'<line x1="{x}" y1="{_n(plot_top)}" x2="{x}" y2="{_n(plot_bottom)}"/>')
    out.append("</g>")

    for k in range(trials):
        row_top = plot_top + k * (2 * lane + _ROW_GAP)
        run_label = gettext("Run %(number)s") % {"number": k + 1}
        out.append(
            f'<text class="chart-label chart-run" x="8" y="{_n(row_top + lane)}"'
            f' dominant-baseline="middle" font-weight="bold">{_esc(run_label)}</text>'
        )
        for i, mode in enumerate(modes):
            centre = row_top + i * lane + lane / 2
            out += _lane(mode, mode.waits[k], centre, x_of, plot_left, width)

    out.append('<g class="chart-axis" stroke="currentColor" stroke-width="1">')
    out.append(
        f'<line x1="{_n(plot_left)}" y1="{_n(plot_bottom)}"'
        f' x2="{_n(plot_right)}" y2="{_n(plot_bottom)}"/>'
    )
    for tick in ticks:
        x = _n(x_of(tick))
        out.append(f'<line x1="{x}" y1="{_n(plot_bottom)}" x2="{x}" y2="{_n(plot_bottom + 4)}"/>')
    out.append("</g>")
    for tick in ticks:
        out.append(
            f'<text class="chart-label chart-axis chart-tick" x="{_n(x_of(tick))}"'
            f' y="{_n(plot_bottom + 16)}" text-anchor="middle" font-size="11"'
            f' fill="currentColor">{_esc(f"{tick:.{decimals}f}")}</text>'
        )
    unit = _esc(gettext("seconds"))  # (not inside the f-string: xgettext would miss it)
    out.append(
        f'<text class="chart-label chart-axis" x="{_n((plot_left + plot_right) / 2)}"'
        f' y="{_n(plot_bottom + 31)}" text-anchor="middle" font-size="11"'
        f' fill="currentColor">{unit}</text>'
    )

    # Medians last, so the dashed lines stay visible over bars and dots.
    for mode in modes:
        value = medians[mode.key]
        if value is None:
            continue
        x = _n(x_of(value))
        out.append(
            f'<line class="chart-median chart-{mode.key}" x1="{x}" y1="{_n(plot_top - 4)}"'
            f' x2="{x}" y2="{_n(plot_bottom)}" stroke="{mode.colour}" stroke-width="1.5"'
            f' stroke-dasharray="4 3"/>'
        )
    out.append("</svg>")
    return "".join(out)


def nice_ticks(vmax: float) -> tuple[list[float], int]:
    """Axis ticks from 0 past ``vmax`` on a 1-2-5 step, 4 to 6 of them, and their decimals.

    Round steps (0.1, 0.2, 0.5, 1, 2, 5, 10 ...) keep labels short and the scale easy to read;
    the smallest such step giving at most five intervals gives at least three, as consecutive
    steps differ by at most 2.5x.
    """
    if not math.isfinite(vmax) or vmax <= 0:
        vmax = 1.0
    exponent = math.floor(math.log10(vmax / _MAX_INTERVALS))
    for e in (exponent, exponent + 1):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0**e
            intervals = math.ceil(round(vmax / step, 9))
            if intervals <= _MAX_INTERVALS:
                decimals = max(0, -e)
                ticks = [round(i * step, decimals) for i in range(intervals + 1)]
                return ticks, decimals
    raise AssertionError("unreachable: 10**(exponent + 1) always fits")  # pragma: no cover


def _lane(
    mode: _Mode,
    waits: TrialWaits,
    centre: float,
    x_of: Callable[[float], float],
    plot_left: float,
    width: int,
) -> list[str]:
    """One mode's lane in one row: lane name, bar, dot, and the value or "failed" note."""
    first, complete = _valid(waits.first_text_s), _valid(waits.complete_s)
    out = [
        f'<text class="chart-label chart-lane chart-{mode.key}" x="{_n(plot_left - 8)}"'
        f' y="{_n(centre)}" dominant-baseline="middle" text-anchor="end" font-size="10"'
        f' fill="{mode.colour}">{_esc(mode.name)}</text>'
    ]
    end = plot_left
    if complete is not None:
        bar_end = x_of(complete)
        out.append(
            f'<rect class="chart-bar chart-{mode.key}" x="{_n(plot_left)}"'
            f' y="{_n(centre - _BAR_H / 2)}" width="{_n(bar_end - plot_left)}"'
            f' height="{_n(_BAR_H)}" rx="1" fill="{mode.colour}" opacity="0.55"/>'
        )
        end = max(end, bar_end)
    if first is not None:
        dot = x_of(first)
        out.append(
            f'<circle class="chart-marker chart-{mode.key}" cx="{_n(dot)}" cy="{_n(centre)}"'
            f' r="{_n(_MARKER_R)}" fill="{mode.colour}"/>'
        )
        end = max(end, dot + _MARKER_R)

    if complete is None:
        note = gettext("failed")
    elif first is None:
        note = gettext("%(seconds)s, no first text") % {"seconds": _seconds(complete)}
    else:
        note = _seconds(complete)
    failed = complete is None or first is None
    classes = "chart-label chart-value" + (" chart-failed" if failed else "")
    x, anchor = end + 5, "start"
    if x + 5.5 * len(note) > width - 2:  # would run off the right edge: end it there instead
        x, anchor = width - 2, "end"
    out.append(
        f'<text class="{classes}" x="{_n(x)}" y="{_n(centre)}" dominant-baseline="middle"'
        f' text-anchor="{anchor}" font-size="10" fill="currentColor">{_esc(note)}</text>'
    )
    return out


def _legend(left: float, modes: Sequence[_Mode], medians: dict[str, float | None]) -> list[str]:
    """Key for the shapes (top line) and the two median first-text waits (second line)."""
    y = 14.0
    # Words first: xgettext does not see calls inside f-strings.
    first, complete, median = gettext("first text"), gettext("complete"), gettext("median")
    out = [
        '<g class="chart-legend" fill="currentColor" stroke="currentColor">',
        f'<circle cx="{_n(left + 4)}" cy="{_n(y)}" r="{_n(_MARKER_R)}" stroke="none"/>',
        f'<text class="chart-label" x="{_n(left + 13)}" y="{_n(y)}" dominant-baseline="middle"'
        f' stroke="none">{_esc(first)}</text>',
        f'<rect x="{_n(left + 82)}" y="{_n(y - _BAR_H / 2)}" width="22" height="{_n(_BAR_H)}"'
        f' rx="1" stroke="none" opacity="0.55"/>',
        f'<text class="chart-label" x="{_n(left + 110)}" y="{_n(y)}" dominant-baseline="middle"'
        f' stroke="none">{_esc(complete)}</text>',
        f'<line x1="{_n(left + 180)}" y1="{_n(y - 6)}" x2="{_n(left + 180)}" y2="{_n(y + 6)}"'
        f' stroke-width="1.5" stroke-dasharray="4 3"/>',
        f'<text class="chart-label" x="{_n(left + 187)}" y="{_n(y)}" dominant-baseline="middle"'
        f' stroke="none">{_esc(median)}</text>',
        "</g>",
    ]
    parts = [
        f'<tspan class="chart-{m.key}" fill="{m.colour}">'
        f"{_esc(_seconds(medians[m.key]))} ({_esc(m.short)})</tspan>"
        for m in modes
    ]
    label = _esc(gettext("median first text:"))
    joined = " / ".join(parts)
    out.append(
        f'<text class="chart-label chart-median-label" x="{_n(left)}" y="{_n(y + 18)}"'
        f' dominant-baseline="middle" fill="currentColor">{label} {joined}</text>'
    )
    return out


def _no_data_svg(width: int, summary: str, names: tuple[str, str] | None = None) -> str:
    """A small valid chart saying there is nothing to draw (no trials, or every one failed)."""
    h = 60
    empty = _esc(gettext("no data"))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-waits" role="img"'
        f' width="{width}" height="{h}" viewBox="0 0 {width} {h}" font-size="12"'
        f' fill="currentColor" aria-label="{_esc(summary)}">'
        f"<title>{_title(names)}</title>"
        f'<text class="chart-label chart-empty" x="{_n(width / 2)}" y="{_n(h / 2)}"'
        f' text-anchor="middle" dominant-baseline="middle" fill="currentColor">{empty}</text>'
        f"</svg>"
    )


def _title(names: tuple[str, str] | None = None) -> str:
    if names is not None:
        return _esc(gettext("Waits per run: %(a)s vs %(b)s") % {"a": names[0], "b": names[1]})
    return _esc(gettext("Waits per run: streaming on vs streaming off"))


def _short(name: str, limit: int = 14) -> str:
    """A lane label fits left of the plot; the title and the summary say it whole."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _summary(
    modes: Sequence[_Mode],
    trials: int,
    first_medians: dict[str, float | None],
    complete_medians: dict[str, float | None],
    names: tuple[str, str] | None = None,
) -> str:
    """What a screen reader announces instead of the drawing: the medians, in words."""
    if names is not None:
        return _setups_summary(trials, first_medians, complete_medians, names)
    if not any(v is not None for v in (*first_medians.values(), *complete_medians.values())):
        return ngettext(
            "Waits per run, streaming on vs off, %(runs)d run: no data.",
            "Waits per run, streaming on vs off, %(runs)d runs: no data.",
            trials,
        ) % {"runs": trials}
    with_mode = {
        "stream": gettext("%(seconds)s with streaming on"),
        "nostream": gettext("%(seconds)s with streaming off"),
    }
    separator = gettext(", ")
    firsts = separator.join(
        with_mode[m.key] % {"seconds": _seconds(first_medians[m.key])} for m in modes
    )
    completes = separator.join(
        with_mode[m.key] % {"seconds": _seconds(complete_medians[m.key])} for m in modes
    )
    return ngettext(
        "Waits per run, streaming on vs off, %(runs)d run. Median wait for first text: "
        "%(firsts)s. Median wait for the complete answer: %(completes)s.",
        "Waits per run, streaming on vs off, %(runs)d runs. Median wait for first text: "
        "%(firsts)s. Median wait for the complete answer: %(completes)s.",
        trials,
    ) % {"runs": trials, "firsts": firsts, "completes": completes}


def _seconds(value: float | None) -> str:
    """Seconds with about two significant digits, as people read waits: 0.41 s, 9.8 s, 12.3 s."""
    if value is None:
        return gettext("n/a")
    if value < 1:
        text = f"{value:.2f}"
    elif value < 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.0f}"
    return gettext("%(seconds)s s") % {"seconds": text}


def _valid(value: float | None) -> float | None:
    """The value if it is a usable wait; a browser clock can report NaN or a negative span."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return value


def _n(value: float) -> str:
    """A coordinate rounded to one decimal, without a trailing ".0" or a "-0"."""
    text = f"{round(value, 1) + 0.0:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _setups_summary(
    trials: int,
    first_medians: dict[str, float | None],
    complete_medians: dict[str, float | None],
    names: tuple[str, str],
) -> str:
    """The summary of a "setups" run: each pane by what it ran."""
    values = {
        "runs": trials,
        "a": names[0],
        "b": names[1],
        "a_first": _seconds(first_medians["stream"]),
        "b_first": _seconds(first_medians["nostream"]),
        "a_done": _seconds(complete_medians["stream"]),
        "b_done": _seconds(complete_medians["nostream"]),
    }
    return (
        ngettext(
            "Waits per run, %(a)s vs %(b)s, %(runs)d run. Median wait for first text: %(a_first)s "
            "and %(b_first)s. Median wait for the complete answer: %(a_done)s and %(b_done)s.",
            "Waits per run, %(a)s vs %(b)s, %(runs)d runs. Median wait for first text: %(a_first)s "
            "and %(b_first)s. Median wait for the complete answer: %(a_done)s and %(b_done)s.",
            trials,
        )
        % values
    )
