"""The processes under test: start, pin, watch (CPU, RSS) and always stop them.

The app and the simulator are started with the same helpers as the live tests
(``tests/conftest.py``) so the benchmark measures exactly what the tests exercise. CPU pinning
works by inheritance: this process pins itself to a core just before each child is forked, so
every thread the child ever starts (Daphne's reactor, asgiref's DB thread) stays on that core.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import (
    ROOT,
    App,
    Simulator,
    start_app,
    start_simulator,
    stop_process,
)

APP_CPU = 0
LOAD_CPU = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Pinning:
    """Which cores the app and the load side got, or why they could not be pinned."""

    app_cpus: str = "any"
    load_cpus: str = "any"
    note: str = ""

    @property
    def pinned(self) -> bool:
        return not self.note


def _pin_self(cpu: int) -> bool:
    """Pin the calling thread (and so every child forked from it) to one core."""
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, AttributeError, ValueError):
        return False
    return True


def allowed_cpus(pid: int) -> str:
    """``Cpus_allowed_list`` of a process, to show in the report what pinning achieved."""
    return proc_status(pid).get("Cpus_allowed_list", "?")


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (VmRSS, VmHWM, Cpus_allowed_list, ...)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_kb(pid: int) -> tuple[int, int]:
    """Current and peak resident memory (VmRSS, VmHWM) in KB."""
    status = proc_status(pid)
    return _kb(status.get("VmRSS")), _kb(status.get("VmHWM"))


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so a phase's peak is its own."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_times() -> dict[str, tuple[int, int]]:
    """Busy and total jiffies per core from /proc/stat, for per-core utilisation."""
    out: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        numbers = [int(v) for v in values[:8]]
        idle = numbers[3] + numbers[4]  # idle + iowait
        out[name] = (sum(numbers) - idle, sum(numbers))
    return out


@dataclass
class CpuWindow:
    """CPU used by the app, the simulator, this client and each core over one phase."""

    pids: dict[str, int]
    started: float = field(default_factory=time.monotonic)
    proc_start: dict[str, float] = field(default_factory=dict)
    cores_start: dict[str, tuple[int, int]] = field(default_factory=core_times)

    def __post_init__(self) -> None:
        self.proc_start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.proc_start["client"] = time.process_time()

    def finish(self) -> dict[str, float]:
        """Seconds of CPU per process and busy share per core (0-1) since the start."""
        wall = max(time.monotonic() - self.started, 1e-9)
        out = {"wall_s": wall}
        for name, pid in self.pids.items():
            out[f"{name}_cpu_s"] = cpu_seconds(pid) - self.proc_start[name]
        out["client_cpu_s"] = time.process_time() - self.proc_start["client"]
        busy_s = 0.0
        for core, (busy, total) in core_times().items():
            busy0, total0 = self.cores_start.get(core, (0, 0))
            out[f"{core}_busy"] = (busy - busy0) / max(total - total0, 1)
            busy_s += (busy - busy0) / CLOCK_TICKS
        ours = sum(v for k, v in out.items() if k.endswith("_cpu_s"))
        # Anything else on the machine (other people's tests, py-spy) competes for the cores.
        out["foreign_cpu_s"] = max(busy_s - ours, 0.0)
        return out


@dataclass
class Servers:
    """The simulator and one Daphne worker of the app, pinned and ready."""

    simulator: Simulator
    sim_process: subprocess.Popen[bytes]
    app: App
    app_process: subprocess.Popen[bytes]
    pinning: Pinning
    workdir: Path

    @property
    def app_pid(self) -> int:
        return self.app_process.pid

    @property
    def pids(self) -> dict[str, int]:
        return {"app": self.app_process.pid, "sim": self.sim_process.pid}

    def clear_sim_log(self) -> None:
        response = httpx.delete(f"http://127.0.0.1:{self.simulator.port}/_sim/requests", timeout=10)
        response.raise_for_status()

    def app_errors(self) -> list[str]:
        """Log lines of the worker that look like trouble (errors, tracebacks, warnings)."""
        words = ("ERROR", "Traceback", "WARNING", "Exception")
        return [line for line in self.app.log().splitlines() if any(w in line for w in words)]


@contextlib.contextmanager
def running_servers(
    app_env: dict[str, str] | None = None, *, keep_files: bool = False
) -> Iterator[Servers]:
    """Start the simulator and the app (own temp SQLite, migrated), stop both on any exit.

    The temp folder (DB, worker log, py-spy output) is removed afterwards unless
    ``keep_files``.
    """
    original = os.sched_getaffinity(0)
    pinning = Pinning()
    if len(original) < 2 or not {APP_CPU, LOAD_CPU} <= original:
        pinning.note = f"not pinned: only CPUs {sorted(original)} are available"
    workdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    sim: tuple[Simulator, subprocess.Popen[bytes]] | None = None
    app: tuple[App, subprocess.Popen[bytes]] | None = None
    try:
        can_pin = pinning.pinned and _pin_self(LOAD_CPU)
        sim = start_simulator()
        if can_pin and not _pin_self(APP_CPU):
            can_pin = False
        env = {
            "LLM_API_BASE": sim[0].base_url,
            "STREAM_SAVE_INTERVAL_MS": "1000",  # the app's default; conftest lowers it
            # Production settings: DEBUG off (no query log), hashed static files collected.
            "DEBUG": "0",
            "SECRET_KEY": "bench-only-not-secret",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Session-owned conversations (the demo's): the relay is measured, not the login.
            "CHAT_REQUIRE_LOGIN": "0",
            "CHAT_RATE_LIMIT": "0",  # the load is the point here
            "CHAT_HTTPS": "0",  # plain HTTP on loopback, no TLS proxy in front
            "STATIC_ROOT": str(workdir / "static"),
            **(app_env or {}),
        }
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
        app = start_app(workdir, env)
        if can_pin:
            _pin_self(LOAD_CPU)
            pinning.app_cpus = allowed_cpus(app[1].pid)
            pinning.load_cpus = f"{allowed_cpus(sim[1].pid)} (simulator), {LOAD_CPU} (client)"
        elif not pinning.note:
            pinning.note = "not pinned: sched_setaffinity was refused"
        yield Servers(sim[0], sim[1], app[0], app[1], pinning, workdir)
    finally:
        for started in (app, sim):
            if started is not None:
                stop_process(started[1])
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, original)
        if not keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
