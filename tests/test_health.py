"""``/healthz``: a word for anyone, the checks for staff, 503 when the database or Redis is
gone, and no Redis connection opened per call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from tests.support.app import start_app
from tests.support.processes import free_port, stop_process
from tests.support.redis_server import RedisServer
from tests.support.simulator import Simulator

pytestmark = pytest.mark.django_db(transaction=True)


def test_anyone_gets_ok_and_nothing_more(client: Client, settings: Settings) -> None:
    settings.CHAT_REQUIRE_LOGIN = True  # no login needed for a balancer's check
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_staff_see_each_check(client: Client) -> None:
    client.force_login(User.objects.create_user("ops", is_staff=True))
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "channel_layer": "ok"}
    assert body["answers_in_flight"] == 0


@pytest.mark.live
def test_an_unreachable_redis_is_503_without_details(tmp_path: Path, simulator: Simulator) -> None:
    """A real worker whose Redis is gone (a closed port): unavailable, and no address shown."""
    app, process = start_app(
        tmp_path,
        {"LLM_API_BASE": simulator.base_url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )
    try:
        response = httpx.get(f"{app.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}
        assert "127.0.0.1" not in response.text and "redis" not in response.text
    finally:
        stop_process(process)


@pytest.mark.live
def test_calls_share_one_redis_connection_and_see_a_restart(
    tmp_path: Path, simulator: Simulator, redis_server: RedisServer
) -> None:
    """A balancer polling /healthz, one call after another or a crowd at once, opens no Redis
    connection per call (anyone may call it: each used to open and close one). The connection
    kept is not trusted blindly: a Redis gone is 503, and back, 200 at the next call."""
    app, process = start_app(
        tmp_path, {"LLM_API_BASE": simulator.base_url, "REDIS_URL": redis_server.url}
    )
    admin = redis.Redis(port=redis_server.port)

    def connections_opened() -> int:
        """Connections Redis has accepted since it started, ours (one) included."""
        return int(admin.info("stats")["total_connections_received"])

    def healthz() -> int:
        return httpx.get(f"{app.url}/healthz", timeout=10).status_code

    async def crowd(calls: int) -> list[int]:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            replies = await asyncio.gather(*(client.get("/healthz") for _ in range(calls)))
        return [reply.status_code for reply in replies]

    try:
        assert healthz() == 200  # the first call opens the connection that the others reuse
        before = connections_opened()
        assert [healthz() for _ in range(20)] == [200] * 20
        assert asyncio.run(crowd(20)) == [200] * 20
        opened = connections_opened() - before
        # At most one more: the worker's channel layer may open its publishing connection for
        # its first probe meanwhile (every 5 s after start).
        assert opened <= 1, f"{opened} Redis connections opened for 40 calls of /healthz"

        redis_server.kill()
        assert healthz() == 503
        redis_server.start()
        # The connection kept from before the restart is dead: replaced, not reported.
        assert healthz() == 200
    finally:
        admin.close()
        stop_process(process)
