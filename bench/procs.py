"""The processes under test: start, pin, watch (CPU, RSS) and always stop them.

The baseline relay (``bench.baseline``) is started beside the app, the same way, so both are
measured in one run on one machine: only their ratio is comparable from day to day.

The app and the simulator are started with the same helpers as the live tests
(``tests/support``) so the benchmark measures exactly what the tests exercise. CPU pinning
works by inheritance: this process pins itself to a core just before each child is forked, so
every thread the child ever starts (Daphne's reactor, asgiref's DB thread) stays on that core.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from tests.support.app import App, start_app
from tests.support.processes import ROOT, free_port, start_daphne, stop_process
from tests.support.simulator import Simulator, start_simulator

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
class Baseline:
    """The baseline relay (``bench.baseline``) under Daphne on a loopback port."""

    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_baseline(
    folder: Path, upstream: str, connections: int
) -> tuple[Baseline, subprocess.Popen[bytes]]:
    """The baseline relay, started exactly as ``start_app`` starts a worker (same Daphne, same
    flags, its output to a log file), with a connection pool of ``connections``."""
    port = free_port()
    log_path = folder / "baseline.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.baseline.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BASELINE_UPSTREAM": upstream,
        "BASELINE_CONNECTIONS": str(connections),
    }
    process = start_daphne("bench.baseline.asgi:application", port, env, log_path)
    return Baseline(port, log_path), process


def app_env(sim_url: str, static_root: Path, **extra: str) -> dict[str, str]:
    """Production settings for a worker of the app, pointed at the simulator."""
    return {
        "LLM_API_BASE": sim_url,
        "STREAM_SAVE_INTERVAL_MS": "1000",  # the app's default; start_app lowers it
        # Production settings: DEBUG off (no query log), hashed static files collected.
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),  # the app refuses a short one in production
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Session-owned conversations (the demo's): the relay is measured, not the login.
        "CHAT_REQUIRE_LOGIN": "0",
        "CHAT_RATE_LIMIT": "0",  # the load is the point here
        "CHAT_HTTPS": "0",  # plain HTTP on loopback, no TLS proxy in front
        "STATIC_ROOT": str(static_root),
        **extra,
    }


def collect_static(env: dict[str, str]) -> None:
    """``collectstatic`` into the env's STATIC_ROOT (production serves hashed files)."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )


def log_problems(text: str) -> list[str]:
    """Log lines that look like trouble (errors, tracebacks, warnings)."""
    words = ("ERROR", "Traceback", "WARNING", "Exception")
    return [line for line in text.splitlines() if any(w in line for w in words)]


def kernel_unsent(peer_port: int) -> int | None:
    """Bytes the kernel holds unsent on the loopback socket whose peer is ``peer_port``: the
    server's side of a client socket (``ss``'s Send-Q), or None where ``ss`` is missing."""
    try:
        done = subprocess.run(
            ["ss", "-tnH", f"( dport = :{peer_port} )"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4].endswith(f":{peer_port}") and fields[2].isdigit():
            return int(fields[2])
    return None


def clear_sim_log(simulator: Simulator) -> None:
    response = httpx.delete(f"http://127.0.0.1:{simulator.port}/_sim/requests", timeout=10)
    response.raise_for_status()


@dataclass
class Servers:
    """The simulator, one Daphne worker of the app and the baseline relay, pinned and ready."""

    simulator: Simulator
    sim_process: subprocess.Popen[str]
    app: App
    app_process: subprocess.Popen[bytes]
    baseline: Baseline
    baseline_process: subprocess.Popen[bytes]
    pinning: Pinning
    workdir: Path

    def app_errors(self) -> list[str]:
        return log_problems(self.app.log())

    def baseline_errors(self) -> list[str]:
        return log_problems(self.baseline.log())


@contextlib.contextmanager
def running_servers(
    app_env_extra: dict[str, str] | None = None,
    *,
    connections: int = 1000,
    keep_files: bool = False,
) -> Iterator[Servers]:
    """Start the simulator, the app (own temp SQLite, migrated) and the baseline relay; stop
    them all on any exit. The app and the baseline share CPU 0 (they take turns), the
    simulator and this client CPU 1.

    The temp folder (DB, logs, py-spy output) is removed afterwards unless ``keep_files``.
    """
    original = os.sched_getaffinity(0)
    pinning = Pinning()
    if len(original) < 2 or not {APP_CPU, LOAD_CPU} <= original:
        pinning.note = f"not pinned: only CPUs {sorted(original)} are available"
    workdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        can_pin = pinning.pinned and _pin_self(LOAD_CPU)
        sim, sim_process = start_simulator()
        started.append(sim_process)
        if can_pin and not _pin_self(APP_CPU):
            can_pin = False
        env = app_env(sim.base_url, workdir / "static", **(app_env_extra or {}))
        collect_static(env)
        app, app_process = start_app(workdir, env)
        started.append(app_process)
        baseline, baseline_process = start_baseline(workdir, sim.base_url, connections)
        started.append(baseline_process)
        if can_pin:
            _pin_self(LOAD_CPU)
            pinning.app_cpus = (
                f"{allowed_cpus(app_process.pid)} (app), "
                f"{allowed_cpus(baseline_process.pid)} (baseline)"
            )
            pinning.load_cpus = f"{allowed_cpus(sim_process.pid)} (simulator), {LOAD_CPU} (client)"
        elif not pinning.note:
            pinning.note = "not pinned: sched_setaffinity was refused"
        yield Servers(
            sim, sim_process, app, app_process, baseline, baseline_process, pinning, workdir
        )
    finally:
        for process in reversed(started):
            stop_process(process)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, original)
        if not keep_files:
            shutil.rmtree(workdir, ignore_errors=True)


class HardLimit(Exception):
    """The whole run took longer than its hard limit."""


@contextlib.contextmanager
def hard_limit(seconds: int) -> Iterator[None]:
    """Stop the run (by raising, so every process is still stopped) after ``seconds``, and turn
    SIGTERM and SIGINT into KeyboardInterrupt even where SIGINT was ignored (nohup, ``&``)."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise HardLimit(f"stopped after {seconds} s")
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
