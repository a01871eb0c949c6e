"""What a phase is given and what a level returns: the pace, the server under test, the figures.

Kept apart from the machinery that runs levels (``bench.phases``) so that the phases, the
watchers and the report modules can all import them without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.analysis import LevelSummary, StreamFacts
from bench.client import StreamProtocol
from bench.profile import Profile


@dataclass(frozen=True)
class Pace:
    """How the upstream streams each answer of a phase."""

    tps: float
    tokens: int
    ttft: float = 0.2
    stamp: bool = True

    def sim_options(self, seed: int) -> dict[str, object]:
        options: dict[str, object] = {"tps": self.tps, "tokens": self.tokens, "ttft": self.ttft}
        options.update(coalesce=1, seed=seed)
        if self.stamp:
            options["stamp"] = 1
        return options

    @property
    def answer_s(self) -> float:
        return self.ttft + self.tokens / self.tps


@dataclass
class Target:
    """One server under test: a label, a marker-safe tag, its protocol and its processes."""

    who: str
    tag: str
    protocol: StreamProtocol
    pids: list[int]
    rss_idle_kb: int = 0


@dataclass
class LevelResult:
    """One run of N concurrent streams: the pooled figures plus what each process used."""

    name: str
    who: str
    streams: int
    pace: Pace
    summary: LevelSummary
    cpu: dict[str, float]
    rss_idle_kb: int
    rss_before_kb: int
    rss_peak_kb: int
    rss_hwm_kb: int
    wall_s: float
    facts: list[StreamFacts] = field(default_factory=list, repr=False)
    profile: Profile | None = None

    @property
    def app_cpu_share(self) -> float:
        """CPU of the server under test over the level, in cores (1.0 = one core busy)."""
        return self.cpu.get("app_cpu_s", 0.0) / max(self.cpu.get("wall_s", 1.0), 1e-9)

    @property
    def app_us_per_token(self) -> float:
        tokens = sum(f.tokens for f in self.facts)
        return self.cpu.get("app_cpu_s", 0.0) / tokens * 1e6 if tokens else math.nan

    @property
    def app_us_per_frame(self) -> float:
        frames = sum(f.delta_frames for f in self.facts)
        return self.cpu.get("app_cpu_s", 0.0) / frames * 1e6 if frames else math.nan

    @property
    def rss_per_stream_kb(self) -> float:
        return (self.rss_hwm_kb - self.rss_idle_kb) / self.streams if self.streams else math.nan

    @property
    def all_tokens_delivered(self) -> bool:
        """Every answer complete and every token the upstream sent received."""
        s = self.summary
        sent = sum(f.upstream_tokens for f in self.facts)
        return s.complete == s.streams and sum(f.tokens for f in self.facts) == sent
