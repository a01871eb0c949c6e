"""Child processes on loopback ports: a free port, waiting until something listens on it, and
stopping a process whatever state it is in. Every server the tests start goes through these."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice, so parallel starts do not clash)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Return once ``port`` accepts connections; fail at once if ``process`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def start_daphne(
    application: str,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    daphne_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Daphne serving ``application`` on a loopback ``port``, its output appended to
    ``log_path``; ``daphne_args``: more of Daphne's options (``--proxy-headers``, as the
    systemd unit)."""
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    return start_listening([*command, *daphne_args, application], port, env, log_path)


def start_listening(
    command: Sequence[str], port: int, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """``command`` run from the checkout, its output appended to ``log_path``; returns once
    it listens on ``port``, and stops it again if it never does."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command), cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 5 s: a test's server never outlives it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SHELL = ("shell", "-v", "0", "-c")  # quiet: only what the code prints


def manage_in_development(*args: str, without: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in development settings, with none of this process's environment
    variables whose names start with ``without`` (the settings under test come from ``env``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(without)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
