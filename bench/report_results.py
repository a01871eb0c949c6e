"""Everything one ``bench.relay`` run measured (``Results``), and its JSON dump (``--json``).

One object carries the run from the phases to the report, so the text report and the JSON
say the same; the JSON leaves out the per-stream samples, which are only inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.phase_enter import EnterResult
from bench.phase_stuck import StuckResult
from bench.phase_types import LevelResult
from bench.procs import Pinning
from bench.profile import Profile
from bench.report_targets import TARGET_LEVELS


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
    """The level that delivered the most tokens/s: a worker's ceiling (None if none measured it)."""
    rated = [lv for lv in levels if not math.isnan(lv.summary.aggregate_tps)]
    return max(rated, key=lambda lv: lv.summary.aggregate_tps, default=None)


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
    """``--json``: the same figures as the text report, for comparing runs by script."""
    path.write_text(json.dumps(_plain(results), indent=2, ensure_ascii=False) + "\n")
