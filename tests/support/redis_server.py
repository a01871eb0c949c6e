"""A private redis-server for tests that kill and restart Redis (the machine's own Redis is
shared with other tests and is left alone)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.processes import free_port, stop_process, wait_for_port
from tests.support.services import unavailable


class RedisServer:
    """A private redis-server that keeps nothing on disk, killed and started at will."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.tmp),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process)
        redis.Redis(port=self.port).ping()

    def user_url(self, user: str) -> str:
        """A REDIS_URL for a user of its own, so one worker's access can be cut (see
        ``allow_channels``) while the others' goes on."""
        redis.Redis(port=self.port).acl_setuser(
            user, enabled=True, passwords=[f"+{user}-pw"], keys=["*"], channels=["*"],
            categories=["+@all"],
        )  # fmt: skip
        return f"redis://{user}:{user}-pw@127.0.0.1:{self.port}/0"

    def allow_channels(self, user: str, allowed: bool, *, reconnect: bool = True) -> None:
        """Revoking a user's pub/sub channels disconnects its subscriptions (Redis 7) and
        refuses new ones and its publishing: what it would hear meanwhile is lost.

        redis-py reconnects at once but, its resubscription refused, stays connected and
        subscribed to nothing; restoring the channels with ``reconnect`` also closes its
        connections, so it reconnects and subscribes again.
        """
        client = redis.Redis(port=self.port)
        client.acl_setuser(
            user, enabled=True, channels=["*"] if allowed else [], reset_channels=True
        )
        if allowed and reconnect:
            client.client_kill_filter(user=user)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[RedisServer]:
    """A started ``RedisServer`` keeping its files in ``tmp``, stopped on the way out (skipped,
    or failed where services are required, if redis-server is not installed)."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisServer(tmp)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            stop_process(server.process)
