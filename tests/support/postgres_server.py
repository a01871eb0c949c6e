"""A private PostgreSQL cluster for tests that stop and start PostgreSQL (the machine's own, on
5432, is shared with other tests and is left alone).

``initdb`` and ``pg_ctl`` refuse to run as root, and tests here run as root: the cluster then
belongs to the ``postgres`` OS user (commands go through ``runuser``), in a directory of its
own outside pytest's (root-only) temporary tree. Trust authentication, loopback only, its
sockets in that directory; nothing of it outlives the fixture.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support.processes import free_port
from tests.support.services import unavailable

OWNER = "postgres"  # the OS user a root test process runs the cluster as


def postgres_bin() -> Path | None:
    """The directory of the newest installed server binaries (initdb, pg_ctl), if any."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    for pg_ctl in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version, reverse=True):
        if Path(pg_ctl).with_name("initdb").exists():
            return Path(pg_ctl).parent
    return None


class PostgresServer:
    """A PostgreSQL cluster on a free loopback port, stopped and started at will."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.logfile = root / "postgres.log"
        self.port = free_port()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OWNER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])

    def initdb(self) -> None:
        # No fsync: a test's data need not survive a power cut, only a server restart.
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and return once it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: its sessions are ended; ``immediate``: as a crash would)
        and return once it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop it whatever state it is in, and remove its files."""
        try:
            if self.running():
                self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)  # its children exit when it is gone
        except (OSError, ValueError, IndexError):
            pass


@contextlib.contextmanager
def private_cluster() -> Iterator[PostgresServer]:
    """A started ``PostgresServer`` in a directory of its own, destroyed on the way out
    (skipped, or failed where services are required, without the server binaries)."""
    bindir = postgres_bin()
    if bindir is None:
        unavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="streamside-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(OWNER)
        except KeyError:
            shutil.rmtree(root)
            unavailable(f"running as root, and there is no {OWNER!r} user to run PostgreSQL")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bindir, root)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.destroy()
