"""Sample the Daphne worker with py-spy while streams run, and say where its CPU goes.

py-spy reads the target's memory from outside (``--nonblocking``: it never pauses it), so the
app needs no change and pays almost nothing; the sampler runs on the load core. Stacks are
grouped by the layer a sample's innermost interesting frame belongs to, after cutting off the
event loop's own frames (``Handle._run`` and above), so loop overhead is not blamed on Twisted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ROOT

FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (group, path fragments); the innermost non-generic frame of a main-thread callback decides.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON encode/decode", ("/json/",)),
    (
        "template + markdown rendering (turn, live blocks, final)",
        ("/django/template/", "/template_partials/", "/chat/markdown.py", "/markdown_it/", "/nh3"),
    ),
    ("DB (ORM) on the event loop", ("/django/db/", "/sqlite3/")),
    (
        "upstream read: httpx/aiohttp/httpcore/h11/anyio/httpx_sse",
        (
            "/httpx/",
            "/httpx_aiohttp/",
            "/aiohttp/",
            "/yarl/",
            "/multidict/",
            "/httpcore/",
            "/h11/",
            "/anyio/",
            "/httpx_sse/",
            "/sniffio/",
        ),
    ),
    ("chat/llm (SSE event parsing)", ("/chat/llm.py", "/chat/llm/")),
    ("chat/fragments.py (delta HTML)", ("/chat/fragments.py",)),
    (
        "chat generation (reader, publisher)",
        ("/chat/services.py", "/chat/generation/"),
    ),
    ("chat/live (sockets, hub, followers)", ("/chat/live/",)),
    ("channels layer (in-memory)", ("/channels/layers.py", "/chat/layers.py")),
    ("sync_to_async hop, loop side (asgiref)", ("/asgiref/", "/channels/db.py")),
    ("channels consumer dispatch (+ chat/consumers.py)", ("/channels/", "/chat/consumers.py")),
    (
        "daphne/autobahn/twisted (websocket send, HTTP)",
        ("/daphne/", "/autobahn/", "/twisted/", "/txaio/"),
    ),
)
LOOP_GROUP = "asyncio event loop (scheduling, timers)"
POLL_GROUP = "asyncio event loop: epoll wait (py-spy saw it as running)"
OTHER_GROUP = "other"
THREAD_CONNECT = "sync thread: DB connect/close per call (CONN_MAX_AGE=0)"
THREAD_DB = "sync thread: DB queries (create_turn, save_progress, save_final)"
THREAD_HOP = "sync thread: close_old_connections per frame (channels dispatch)"
THREAD_OTHER = "sync thread: executor and other"
# Stdlib helpers that do work on behalf of their caller: blame the caller.
GENERIC = (
    "/asyncio/",
    "/selectors.py",
    "/threading.py",
    "/concurrent/",
    "/contextlib.py",
    "/functools.py",
    "/copy.py",
    "/re/",
    "/enum.py",
    "/typing.py",
    "/weakref.py",
    "/random.py",
    "/html/__init__.py",
    "/logging/",
    "/dataclasses.py",
    "/abc.py",
    "/queue.py",
    "/socket.py",
    "<frozen",
    "/codecs.py",
    "/encodings/",
    "/string.py",
    "/collections/",
)
CONNECTION_CALLS = ("close_old_connections", "ensure_connection", "get_new_connection", ".close")


@dataclass(frozen=True)
class StackFrame:
    name: str
    file: str

    @property
    def label(self) -> str:
        return f"{self.name} ({short_path(self.file)})"


def short_path(path: str) -> str:
    """Path from the package root: site-packages/…, chat/…, or the stdlib module."""
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


@dataclass
class Profile:
    """Aggregated samples: per group, per function (self and total), and the sampling budget."""

    samples: int = 0
    groups: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    total_time: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)
    rate_hz: int = 0
    duration_s: float = 0.0
    error: str = ""


def parse_stack(line: str) -> tuple[list[StackFrame], int] | None:
    """One collapsed-stack line of ``py-spy --format raw``: frames root first, and its count."""
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames: list[StackFrame] = []
    for part in stack.split(";"):
        match = FRAME.match(part)
        if match:
            frames.append(StackFrame(match["name"], match["file"]))
    return frames, int(count)


def _callback_frames(frames: list[StackFrame]) -> list[StackFrame] | None:
    """Frames of the callback the loop is running (inside the last Handle._run), if any."""
    for index in range(len(frames) - 1, -1, -1):
        if frames[index].name in {"Handle._run", "_run"} and frames[index].file.endswith(
            "asyncio/events.py"
        ):
            return frames[index + 1 :]
    return None


def _in_thread(frames: list[StackFrame]) -> bool:
    return any(f.file.endswith("threading.py") for f in frames)


def _thread_group(frames: list[StackFrame]) -> str:
    """Work of asgiref's single sync thread, split by why it runs."""
    names = [f.name for f in frames]
    connection = any(n.endswith(CONNECTION_CALLS) for n in names)
    if any(n.startswith("DatabaseSyncToAsync.") for n in names):
        return THREAD_CONNECT if connection else THREAD_DB
    if "close_old_connections" in names:
        return THREAD_HOP
    if any("django/db/" in f.file for f in frames):
        return THREAD_CONNECT if connection else THREAD_DB
    return THREAD_OTHER


def group_of(frames: list[StackFrame]) -> str:
    """The layer responsible for one sample (the innermost non-generic frame decides)."""
    if _in_thread(frames):
        return _thread_group(frames)
    inner = _callback_frames(frames)
    if inner is None:
        if frames and frames[-1].file.endswith("selectors.py"):
            return POLL_GROUP
        if any(f.name.endswith("._run_once") for f in frames):
            return LOOP_GROUP  # the loop itself: timers, the ready queue
        inner = frames  # a stack py-spy caught mid-switch, without the loop's frames
    for frame in reversed(inner):
        path = "/" + frame.file
        if any(g in path for g in GENERIC):
            continue
        for group, needles in GROUPS:
            if any(n in path for n in needles):
                return group
        return OTHER_GROUP
    return LOOP_GROUP


def aggregate(lines: list[str], rate_hz: int, duration_s: float) -> Profile:
    profile = Profile(rate_hz=rate_hz, duration_s=duration_s)
    for line in lines:
        parsed = parse_stack(line)
        if parsed is None or not parsed[0]:
            continue
        frames, count = parsed
        profile.samples += count
        profile.groups[group_of(frames)] += count
        profile.self_time[frames[-1].label] += count
        for label in {f.label for f in frames}:
            profile.total_time[label] += count
        thread = "sync (asgiref executor)" if _in_thread(frames) else "main (event loop)"
        profile.threads[thread] += count
    return profile


def py_spy_path() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    """One ``py-spy record`` run against a pid: until ``finish`` or ``duration_s`` at most."""

    def __init__(self, pid: int, out: Path, rate_hz: int, duration_s: int) -> None:
        self.pid, self.out, self.rate_hz, self.duration_s = pid, out, rate_hz, duration_s
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.error = ""

    def start(self) -> None:
        exe = py_spy_path()
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        command = [
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate_hz),
            "--duration",
            str(self.duration_s),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(self.out),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()

    def finish(self, timeout_s: float = 30.0) -> Profile:
        """Stop py-spy if it still runs (SIGINT: it writes its file), then aggregate."""
        if self.process is None:
            return Profile(error=self.error)
        elapsed = time.monotonic() - self.started
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, stderr = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return Profile(error="py-spy did not finish in time")
        if not self.out.exists():
            message = stderr.decode(errors="replace").strip().splitlines()
            return Profile(error=f"py-spy failed: {' '.join(message[-3:])}")
        lines = self.out.read_text(errors="replace").splitlines()
        return aggregate(lines, self.rate_hz, min(elapsed, self.duration_s))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
