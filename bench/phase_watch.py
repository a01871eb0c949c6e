"""What the server under test used during one level: CPU (its own, each core's, other
processes') and memory (VmRSS polled, VmHWM reset per level).

A level's CPU per token and RSS per stream are read from this, beside the streams' figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from bench.phase_types import Target
from bench.procs import CpuWindow, reset_peak_rss, rss_kb

RSS_EVERY_S = 0.1


class LevelWatch:
    """CPU and memory of the target's processes over one level (started at construction)."""

    def __init__(self, target: Target, sim_pid: int) -> None:
        self.pids = list(target.pids)
        self.rss_before_kb = self._rss()
        for pid in self.pids:
            reset_peak_rss(pid)
        names = {f"app{i}": pid for i, pid in enumerate(self.pids)}
        self.window = CpuWindow({**names, "sim": sim_pid})
        self.sampler = RssSampler(self.pids)
        self.task = asyncio.create_task(self.sampler.run())
        self.started = time.monotonic()
        self.cpu: dict[str, float] = {}
        self.wall_s = 0.0
        self.rss_peak_kb = 0
        self.rss_hwm_kb = 0

    def _rss(self) -> int:
        return sum(rss_kb(pid)[0] for pid in self.pids)

    async def stop(self) -> None:
        self.wall_s = time.monotonic() - self.started
        self.cpu = self.window.finish()
        self.cpu["app_cpu_s"] = sum(self.cpu.pop(f"app{i}_cpu_s") for i in range(len(self.pids)))
        self.sampler.stop()
        await self.task
        self.rss_peak_kb = self.sampler.peak_kb
        hwm = sum(rss_kb(pid)[1] for pid in self.pids)
        self.rss_hwm_kb = max(hwm, self.rss_peak_kb)


class RssSampler:
    """Polls the processes' VmRSS while a level runs (VmHWM gives the exact peak as well)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak_kb = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(rss_kb(pid)[0] for pid in self.pids))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RSS_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
