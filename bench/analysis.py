"""Turn recorded frames and the simulator's log into figures, and check every answer.

Latency comes from the simulator's send stamps (``stamp=1``: each content chunk starts with
``⟦<time.time()>⟧``), compared with when the client received the frame holding it; both clocks
are this machine's wall clock, so no synchronisation is needed. A coalesced frame holds several
stamps and each counts: a token that waited 29 ms for its frame is a 29 ms sample.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.client import ParsedFrame, StreamRecord

STAMP = re.compile(r"⟦(\d+\.\d+)⟧")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0-100) of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class StreamFacts:
    """One answer, checked against what the upstream sent."""

    marker: str
    verdict: str
    latencies_ms: list[float] = field(default_factory=list)
    first_token_ms: float | None = None
    delta_frames: int = 0
    frames: int = 0  # every frame the socket received for this answer
    tokens: int = 0
    upstream_tokens: int = 0
    first_delta_at: float | None = None
    last_delta_at: float | None = None
    finished_at: float | None = None
    delivered_tps: float | None = None
    upstream_tps: float | None = None
    first_stamp: float | None = None
    last_stamp: float | None = None
    delivery_times: list[tuple[float, int]] = field(default_factory=list)
    bytes_turn: int = 0
    bytes_deltas: int = 0
    bytes_final: int = 0
    bytes_other: int = 0
    answer_bytes: int = 0
    answer_chars: int = 0
    sent_at: float = 0.0
    requested_at: float | None = None  # when the simulator received the upstream request
    wire_bytes: int | None = None  # TCP bytes received, send -> final frame (if counted)
    extensions: str | None = None  # Sec-WebSocket-Extensions accepted (if counted; "" = none)

    @property
    def enter_to_upstream_ms(self) -> float | None:
        """From the client sending the message to the upstream receiving the request."""
        if self.requested_at is None or not self.sent_at:
            return None
        return (self.requested_at - self.sent_at) * 1000

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def bytes_total(self) -> int:
        return self.bytes_turn + self.bytes_deltas + self.bytes_final + self.bytes_other


def _rate(count: int, start: float | None, end: float | None) -> float | None:
    """Tokens per second between the first and the last of ``count`` tokens."""
    if count < 2 or start is None or end is None or end <= start:
        return None
    return (count - 1) / (end - start)


def _verdict(record: StreamRecord, deltas: list[tuple[int, str]], sim: dict[str, Any]) -> str:
    """ "ok", or what went wrong: stuck, error, lost, duplicated, reordered, out-of-order frames."""
    if record.error:
        return f"error ({record.error[:80]})"
    if record.final_status is None:
        return "stuck (no final frame)"
    status = record.final_status
    if status != "complete":
        return f"final status {status}"
    if sim.get("outcome") != "complete":
        return f"upstream outcome {sim.get('outcome')}"
    seqs = [seq for seq, _ in deltas]
    if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
        return "frames out of order (seq)"
    streamed = "".join(text for _, text in deltas)
    expected = sim.get("text", "")
    if streamed == expected:
        return "ok"
    got, want = STAMP.findall(streamed), STAMP.findall(expected)
    counts = Counter(got)
    if any(n > 1 for n in counts.values()):
        return "duplicated text"
    if set(want) - set(got):
        return "lost text"
    if got != want:
        return "reordered text"
    return "text differs"


def _classify_bytes(facts: StreamFacts, frames: Iterable[ParsedFrame]) -> None:
    for frame in frames:
        facts.frames += 1
        if frame.kind == "delta":
            facts.bytes_deltas += frame.size
        elif frame.kind == "final":
            facts.bytes_final += frame.size
        elif frame.kind == "turn":
            facts.bytes_turn += frame.size
        else:
            facts.bytes_other += frame.size


def analyse_stream(
    record: StreamRecord, frames: Sequence[ParsedFrame], sim: dict[str, Any] | None
) -> StreamFacts:
    """Latency samples, frames, rates, bytes and a verdict for one stream.

    ``frames`` are the record's frames as its protocol parsed them (``StreamProtocol.parse``).
    """
    if sim is None:
        seen = record.error or (record.final_status and f"final status {record.final_status}")
        return StreamFacts(
            record.marker, "no upstream request logged" + (f" ({seen})" if seen else "")
        )
    deltas: list[tuple[int, str]] = []
    facts = StreamFacts(record.marker, "")
    facts.wire_bytes, facts.extensions = record.wire_bytes, record.extensions
    facts.requested_at = sim.get("started_at")
    facts.sent_at = record.sent_at
    expected_stamps = [float(s) for s in STAMP.findall(sim.get("text", ""))]
    for frame in frames:
        if not frame.deltas:
            continue
        deltas.extend(frame.deltas)
        facts.delta_frames += 1
        stamps = [float(s) for _, text in frame.deltas for s in STAMP.findall(text)]
        facts.latencies_ms.extend((frame.at - s) * 1000 for s in stamps)
        if facts.first_delta_at is None:
            facts.first_delta_at = frame.at
            if stamps and expected_stamps and stamps[0] == expected_stamps[0]:
                facts.first_token_ms = (frame.at - stamps[0]) * 1000
        facts.last_delta_at = frame.at
        facts.tokens += len(stamps)
        facts.delivery_times.append((frame.at, len(stamps)))
    facts.verdict = _verdict(record, deltas, sim)
    facts.finished_at = record.finished_at
    facts.upstream_tokens = int(sim.get("tokens_sent") or 0)
    facts.delivered_tps = _rate(facts.tokens, facts.first_delta_at, facts.last_delta_at)
    if expected_stamps:
        facts.first_stamp, facts.last_stamp = expected_stamps[0], expected_stamps[-1]
        facts.upstream_tps = _rate(len(expected_stamps), facts.first_stamp, facts.last_stamp)
    facts.answer_chars = len(sim.get("text", ""))
    facts.answer_bytes = len(sim.get("text", "").encode())
    _classify_bytes(facts, frames)
    return facts


def by_marker(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Simulator log entries keyed by the ``bench-…`` marker in their last user message."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        users = [m for m in entry.get("messages", []) if m.get("role") == "user"]
        if users and (match := re.match(r"(bench-[\w-]+)", str(users[-1].get("content", "")))):
            out[match.group(1)] = entry
    return out


@dataclass
class LevelSummary:
    """Pooled figures for a set of concurrent streams."""

    streams: int
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_p50_ms: float
    first_p99_ms: float
    first_missing: int
    frames_per_answer: float
    tokens_per_answer: float
    complete: int
    problems: dict[str, int]
    delivered_tps_per_stream: float
    upstream_tps_per_stream: float
    aggregate_tps: float
    aggregate_span_s: float
    upstream_aggregate_tps: float
    offered_tps: float
    timeline: list[tuple[int, int, float]] = field(default_factory=list)


def _span_rate(count: int, starts: list[float], ends: list[float]) -> tuple[float, float]:
    """Tokens per second from the earliest start to the latest end, and that span.

    The whole span, not a steady window: a relay that stalls and then bursts must not look
    as fast as one that keeps pace.
    """
    if not starts or not ends or max(ends) <= min(starts):
        return math.nan, 0.0
    span = max(ends) - min(starts)
    return count / span, span


def timeline(facts: Sequence[StreamFacts]) -> list[tuple[int, int, float]]:
    """Per second of the level: tokens delivered and their p99 latency (shows stalls)."""
    start = min((f.first_delta_at for f in facts if f.first_delta_at is not None), default=None)
    if start is None:
        return []
    buckets: dict[int, list[float]] = {}
    for f in facts:
        samples = iter(f.latencies_ms)
        for at, count in f.delivery_times:
            bucket = buckets.setdefault(int(at - start), [])
            bucket.extend(next(samples) for _ in range(count))
    return [(sec, len(v), percentile(v, 99)) for sec, v in sorted(buckets.items())]


def summarise(facts: Sequence[StreamFacts], offered_tps: float) -> LevelSummary:
    """Pool every stream's samples; rates per stream and over the level's whole span."""
    latencies = [x for f in facts for x in f.latencies_ms]
    firsts = [f.first_token_ms for f in facts if f.first_token_ms is not None]
    problems = Counter(f.verdict for f in facts if not f.ok)
    delivered = [f.delivered_tps for f in facts if f.delivered_tps is not None]
    upstream = [f.upstream_tps for f in facts if f.upstream_tps is not None]
    count = max(len(facts), 1)
    aggregate, span = _span_rate(
        sum(f.tokens for f in facts),
        [f.first_delta_at for f in facts if f.first_delta_at is not None],
        [f.last_delta_at for f in facts if f.last_delta_at is not None],
    )
    sent, _ = _span_rate(
        sum(f.upstream_tokens for f in facts),
        [f.first_stamp for f in facts if f.first_stamp is not None],
        [f.last_stamp for f in facts if f.last_stamp is not None],
    )
    return LevelSummary(
        streams=len(facts),
        samples=len(latencies),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
        first_p50_ms=percentile(firsts, 50),
        first_p99_ms=percentile(firsts, 99),
        first_missing=len(facts) - len(firsts),
        frames_per_answer=sum(f.delta_frames for f in facts) / count,
        tokens_per_answer=sum(f.tokens for f in facts) / count,
        complete=len(facts) - sum(problems.values()),
        problems=dict(problems),
        delivered_tps_per_stream=sum(delivered) / max(len(delivered), 1),
        upstream_tps_per_stream=sum(upstream) / max(len(upstream), 1),
        aggregate_tps=aggregate,
        aggregate_span_s=span,
        upstream_aggregate_tps=sent,
        offered_tps=offered_tps,
        timeline=timeline(facts),
    )
