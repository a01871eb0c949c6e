"""Streamside itself under Daphne, one process per worker, each with its own log (and, unless
told otherwise, its own SQLite file), as a deployment runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port, start_daphne, stop_process


@dataclass
class App:
    """Streamside under Daphne on a loopback port."""

    port: int
    db_path: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_app(
    tmp_path: Path,
    env: dict[str, str],
    port: int | None = None,
    daphne_args: Sequence[str] = (),
) -> tuple[App, subprocess.Popen[bytes]]:
    """Streamside under Daphne (on ``port``, else a free one), its log in ``tmp_path``
    (appended to, so a worker restarted in the same folder keeps one log); ``daphne_args``
    as ``processes.start_daphne``."""
    port = port or free_port()
    db_path = tmp_path / "db.sqlite3"
    log_path = tmp_path / "daphne.log"
    # The embedded defaults unless the caller asks for shared services (REDIS_URL in env).
    inherited = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full_env = {
        **inherited,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{db_path}",
        "PORT": str(port),
        "STREAM_SAVE_INTERVAL_MS": "200",
        **env,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=full_env,
        check=True,
        capture_output=True,
    )
    process = start_daphne("chatsite.asgi:application", port, full_env, log_path, daphne_args)
    return App(port, db_path, log_path), process


@contextlib.contextmanager
def running_app(tmp_path: Path, env: dict[str, str]) -> Iterator[App]:
    """``start_app``, stopped on the way out."""
    instance, process = start_app(tmp_path, env)
    try:
        yield instance
    finally:
        stop_process(process)


@contextlib.contextmanager
def two_workers(
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    name: str = "worker",
    per_side: Callable[[str], dict[str, str]] | None = None,
) -> Iterator[tuple[App, App]]:
    """Two Daphne processes with the same settings (a team's workers), stopped afterwards;
    ``per_side("a")``/``("b")`` adds settings of one worker's own."""
    started: list[tuple[App, subprocess.Popen[bytes]]] = []
    try:
        for side in ("a", "b"):
            own = {**env, **(per_side(side) if per_side else {})}
            started.append(start_app(tmp_path_factory.mktemp(f"{name}-{side}"), own))
        yield started[0][0], started[1][0]
    finally:
        for _, process in started:
            stop_process(process)


def manage(env: dict[str, str], db: Path, *args: str) -> None:
    """``manage.py ARGS`` on an app's SQLite database (``db``), before the app starts on it."""
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**env, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{db}"},
        check=True,
        capture_output=True,
    )


def set_provider(env: dict[str, str], db: Path, *args: str) -> None:
    """Register a provider (``manage.py set_provider``) on an app's database."""
    manage(env, db, "set_provider", *args)
