"""The upstream simulator (``python -m simulator``, under Daphne) in a process of its own on a
loopback port, and the client side of its request log, which tests compare with what the app
streamed and saved."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import httpx

from simulator.prompt import message_text
from tests.support.processes import ROOT, free_port, stop_process

# The API key conftest's ``keyed_simulator`` demands (and the app is configured with).
KEY = "sk-live-Provider0123456789abcdef"
BANNER = "simulator listening"


@dataclass
class Simulator:
    """A running simulator: where it listens, and what its banner announced."""

    port: int
    prefix: str = ""
    banner: str = ""

    @property
    def base(self) -> str:
        """Its root, prefix included (the native protocol's paths hang from here)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, as the app's ``LLM_API_BASE`` takes it."""
        return f"{self.base}/v1"

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def log_url(self) -> str:
        return f"{self.base}/_sim/requests"

    def requests(self) -> list[dict[str, Any]]:
        """Every request it saw, oldest first (its own log, over HTTP)."""
        response = httpx.get(self.log_url, timeout=5)
        response.raise_for_status()
        return list(response.json()["requests"])

    def request_for(self, marker: str) -> dict[str, Any]:
        """The logged request whose last user message contains ``marker``."""
        for entry in reversed(self.requests()):
            users = [m for m in entry["messages"] if m["role"] == "user"]
            # A message with images has a list of parts for content: its text is looked in.
            if users and marker in message_text(users[-1]["content"]):
                return entry
        raise LookupError(f"the simulator saw no request containing {marker!r}")

    def ended_as(self, marker: str, outcome: str) -> dict[str, Any] | None:
        """``request_for(marker)`` once its outcome is ``outcome``, else None (to poll for)."""
        entry = self.request_for(marker)
        return entry if entry["outcome"] == outcome else None


class _Output(threading.Thread):
    """Reads the simulator's output for as long as it runs: the banner first, then discarding
    the rest, so a chatty simulator never blocks on a full pipe."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True, name="simulator-output")
        self.stream = stream
        self.before: list[str] = []
        self.banner = ""
        self.settled = threading.Event()  # the banner came, or the output ended

    def run(self) -> None:
        for line in self.stream:
            if not self.settled.is_set():
                self.before.append(line)
                if line.startswith(BANNER):
                    self.banner = line.strip()
                    self.settled.set()
        self.settled.set()


def start_simulator(
    *options: str, prefix: str = "", env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> tuple[Simulator, subprocess.Popen[str]]:
    """A simulator on a free port, returned once it has printed its banner (it prints it once
    bound). Realistic defaults: ``SIM_*`` variables of the calling environment are left out
    unless given in ``env``, so callers pick speeds per prompt with ``#sim`` directives.
    ``options`` are more command-line options (``--api-key``, ``--stream-only-models``, …)."""
    port = free_port()
    command = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)]
    if prefix:
        command += ["--prefix", prefix]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    process = subprocess.Popen(
        [*command, *options],
        cwd=ROOT,
        env={**inherited, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = _Output(process.stdout)
    output.start()
    try:
        deadline = time.monotonic() + timeout
        while not output.settled.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                break
        if not output.banner:
            said = "".join(output.before)[-2000:]
            raise RuntimeError(f"the simulator did not start within {timeout} s: {said}")
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # bound: accepts now
    except BaseException:
        stop_process(process)
        raise
    return Simulator(port, prefix, output.banner), process


@contextlib.contextmanager
def running_simulator(
    *options: str, prefix: str = "", env: Mapping[str, str] | None = None
) -> Iterator[Simulator]:
    """``start_simulator``, stopped on the way out."""
    instance, process = start_simulator(*options, prefix=prefix, env=env)
    try:
        yield instance
    finally:
        stop_process(process)
